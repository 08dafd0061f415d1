"""Every target a policy declares, checked against the run's headline estimate in every run.

The constrained router's mean targets, MESS+'s satisfaction α and StageRoute's budget are promises
about means over requests. A run compares each with the headline estimator's interval: the whole
interval on the right side — "holds"; the whole interval on the wrong side — "fails", a warning at
the top of the console output, the report and summary.json; an interval that straddles the target —
"not shown to hold" (the data cannot tell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from ope.evaluation.distributions import quantile_headline
from policies import Policy
from policies.base import DeclaredTarget, declared_targets

__all__ = ["FAILS", "HOLDS", "NOT_SHOWN", "TargetCheck", "check_targets"]

HOLDS, FAILS, NOT_SHOWN, NOT_ESTIMATED = "holds", "fails", "not shown to hold", "not estimated"


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One declared target against the headline estimate: ``verdict`` holds, fails, not shown to hold or not estimated."""

    policy: str
    key: str
    metric: str
    target: float
    sense: float
    estimator: str
    estimate: float
    ci_low: float
    ci_high: float
    verdict: str

    @property
    def relation(self) -> str:
        """≥ for a floor, ≤ for a cap."""
        return "≥" if self.sense < 0 else "≤"

    @property
    def warning(self) -> str:
        """The warning of a failed target."""
        side = "below" if self.sense < 0 else "above"
        return (f"TARGET MISSED: {self.policy} declares {self.metric} {self.relation} {self.target:g} ({self.key}), but "
                f"{self.estimator} puts it at {self.estimate:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}]: the whole interval "
                f"is {side} the target.")

    def to_dict(self) -> dict[str, Any]:
        """summary.json's form: ``{policy, metric, target, estimate, ci, verdict}`` and the rest."""
        return {"policy": self.policy, "metric": self.metric, "target": self.target, "estimate": self.estimate,
                "ci": [self.ci_low, self.ci_high], "verdict": self.verdict, "key": self.key,
                "relation": ">=" if self.sense < 0 else "<=", "estimator": self.estimator}


def _verdict(sense: float, target: float, low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return NOT_ESTIMATED
    right, wrong = (low >= target, high < target) if sense < 0 else (high <= target, low > target)
    return HOLDS if right else FAILS if wrong else NOT_SHOWN


def check_targets(policies: dict[str, Policy], estimates: pl.DataFrame, estimator: str,
                  quantiles: pl.DataFrame | None = None) -> list[TargetCheck]:
    """Each declared target of each policy (config order) against ``estimator``'s value interval; a quantile target
    (p95 ≤ T) against the quantile's interval in ``quantiles`` (quantiles.csv, its headline estimator)."""
    out = []
    tail = None if quantiles is None or quantiles.height == 0 else quantile_headline(quantiles["estimator"].unique().to_list())
    for name, policy in policies.items():
        for t in declared_targets(policy):
            if t.quantile is not None:
                out.append(_quantile_check(name, t, quantiles, tail))
                continue
            row = estimates.filter((pl.col("policy") == name) & (pl.col("estimator") == estimator) & (pl.col("kind") == "value")
                                   & (pl.col("metric") == t.metric))
            value, low, high = (float(row[c][0]) if row.height and row[c][0] is not None else math.nan
                                for c in ("value", "ci_low", "ci_high"))
            out.append(TargetCheck(name, t.key, t.metric, t.target, t.sense, estimator, value, low, high,
                                   _verdict(t.sense, t.target, low, high)))
    return out


def _quantile_check(name: str, t: DeclaredTarget, quantiles: pl.DataFrame | None, estimator: str | None) -> TargetCheck:
    """A p95 target against the policy's estimated p95 and its interval (not estimated without distributions)."""
    label = f"p{round(100 * (t.quantile or 0))} {t.metric}"
    if quantiles is None or estimator is None:
        return TargetCheck(name, t.key, label, t.target, t.sense, "none", math.nan, math.nan, math.nan, NOT_ESTIMATED)
    row = quantiles.filter((pl.col("policy") == name) & (pl.col("estimator") == estimator) & (pl.col("kind") == "value")
                           & (pl.col("metric") == t.metric) & (pl.col("quantile") == t.quantile))
    value, low, high = (float(row[c][0]) if row.height and row[c][0] is not None else math.nan for c in ("value", "ci_low", "ci_high"))
    return TargetCheck(name, t.key, label, t.target, t.sense, estimator, value, low, high, _verdict(t.sense, t.target, low, high))
