"""Estimates outside what their metric can be: flagged with the likely reason and what to try, never clipped.

A probability (success, satisfaction, SLA hit) lies in [0, 1]; a cost, a time and a throughput are
≥ 0. IPS, DR and their relatives are unbiased but not bounded: with few effective samples or a few
huge importance weights a value can land outside that range. SNIPS stays within the range of the
logged outcomes; SNDR self-normalises the correction and rarely leaves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import polars as pl

from ope.data.schema import RATE_METRICS

__all__ = ["FEW_EFFECTIVE_SHARE", "RANGES", "OutOfRange", "out_of_range"]

RANGES: dict[str, tuple[float, float]] = {m: (0.0, 1.0) for m in RATE_METRICS} | {
    m: (0.0, math.inf) for m in ("cost_usd", "ttft_ms", "latency_ms", "throughput_tps")}
FEW_EFFECTIVE_SHARE = 0.05     # ESS below 5 % of the rows: the estimate rests on a few requests
EXTREME_WEIGHT = 20.0          # one request weighing as much as 20 logged ones
TOLERANCE = 1e-9               # rounding in sums of weights is not a finding


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfRange:
    """One estimate outside its metric's range, why it probably is, and what to use instead."""

    policy: str
    metric: str
    estimator: str
    value: float
    low: float
    high: float
    reason: str
    suggestion: str

    @property
    def range(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" if math.isfinite(self.high) else f"≥ {self.low:g}"

    def message(self) -> str:
        return (f"{self.policy}: {self.estimator} {self.metric} = {self.value:.4g} is impossible (must be {self.range}): "
                f"{self.reason}. {self.suggestion}")

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "metric": self.metric, "estimator": self.estimator, "value": self.value,
                "range": self.range, "reason": self.reason, "suggestion": self.suggestion}


def _reason(row: dict[str, Any], diag: dict[str, Any] | None) -> str:
    n, ess = row["n"], row["ess"]
    max_weight = None if diag is None else diag.get("max_weight")
    if ess is not None and n and ess < FEW_EFFECTIVE_SHARE * n:
        return f"few effective samples (ESS {ess:,.0f} of {n:,.0f} rows, {ess / n:.1%})"
    if max_weight is not None and max_weight > EXTREME_WEIGHT:
        return f"extreme importance weights (largest {max_weight:,.0f})"
    if row["estimator"] == "DM":
        return "the outcome model predicts outside the range"
    detail = f"; largest weight {max_weight:,.1f}" if max_weight is not None else ""
    return f"the importance-weighted correction overshoots (ESS {ess:,.0f} of {n:,.0f} rows{detail})"


def _suggestion(estimator: str) -> str:
    if estimator in ("SNIPS", "SNDR"):
        return "Read SNIPS, which stays within the logged outcomes' range, and check the weights in the diagnostics."
    return "Prefer SNIPS or SNDR here (self-normalised: they stay within the outcome range)."


def out_of_range(estimates: pl.DataFrame, diagnostics: dict[str, dict[str, Any]]) -> list[OutOfRange]:
    """Every ``value`` estimate outside its metric's range (NaN is not flagged: it says so itself)."""
    found = []
    for row in estimates.filter(pl.col("kind") == "value").iter_rows(named=True):
        low, high = RANGES.get(row["metric"], (-math.inf, math.inf))
        v = row["value"]
        if v is None or math.isnan(v) or low - TOLERANCE * max(1.0, abs(low)) <= v <= high + TOLERANCE * max(1.0, abs(high)):
            continue
        diag = diagnostics.get(row["policy"], {}).get(row["estimator"])
        found.append(OutOfRange(policy=row["policy"], metric=row["metric"], estimator=row["estimator"], value=v, low=low,
                                high=high, reason=_reason(row, diag), suggestion=_suggestion(row["estimator"])))
    return found
