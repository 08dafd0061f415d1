"""The headline estimator per metric, chosen from the data (`estimators.selection.slope`) or fixed by the config.

Per metric, SLOPE runs on each non-baseline policy's paired difference against the baseline (the
numbers headlines decide on; the baseline's own value when it is the only policy). The metric's
headline is the estimator chosen for most policies, ties broken by `PREFERENCE`; with no usable
candidate it is undecided and DR (else the first preferred estimator the run computed) is kept.

The headline numbers then follow the choice: `headline_rows` keeps, per metric, the chosen
estimator's rows, which the console table, summary.json's ``policies``, the report's headline table
and forest plot and MLflow's headline metrics all quote (each saying which estimator per metric).

DM is no candidate when an importance-weighted estimator was computed: its interval holds the
variance of the model's predictions, not the model's bias, so SLOPE's agreement test cannot see
what makes it wrong (on the quickstart it picked DM for 6 of 7 metrics). A log routed
deterministically leaves DM alone, and then DM is the headline, as the run's notes say.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl

from estimators.selection import slope
from ope.evaluation.plan import PREFERENCE, primary_estimator

__all__ = ["choose_headlines", "chosen_estimators", "headline_rows"]


def _one_metric(frame: pl.DataFrame, estimators: list[str], default: str) -> dict[str, Any]:
    picks: list[tuple[str, str, str]] = []
    for (policy,), sub in frame.group_by("policy", maintain_order=True):
        sub = sub.filter(pl.col("estimator").is_in(estimators))
        names = sub["estimator"].to_list()
        half = ((sub["ci_high"] - sub["ci_low"]) / 2).to_list()
        chosen = slope(names, sub["value"].to_list(), half)
        if chosen.index is not None:
            picks.append((str(policy), names[chosen.index], chosen.reason))
    if not picks:
        return {"estimator": default, "reason": f"undecided (no estimator has a finite interval): {default} by default",
                "by_policy": {}}
    counts = Counter(name for _, name, _ in picks)
    best = max(counts, key=lambda n: (counts[n], -PREFERENCE.index(n) if n in PREFERENCE else -99))
    reason = next(r for _, n, r in picks if n == best)
    return {"estimator": best, "reason": f"SLOPE chose it for {counts[best]} of {len(picks)} policies: {reason}",
            "by_policy": {p: n for p, n, _ in picks}}


def choose_headlines(estimates: pl.DataFrame, baseline: str, estimators: list[str], setting: str = "auto") -> dict[str, Any]:
    """Per metric: the headline estimator, the reason, and SLOPE's choice per policy."""
    default = primary_estimator(estimators)
    if setting != "auto" and setting in estimators:
        return {m: {"estimator": setting, "reason": "fixed by [evaluation] headline", "by_policy": {}}
                for m in estimates["metric"].unique(maintain_order=True)}
    candidates = [e for e in estimators if e != "DM"] or list(estimators)
    diff = estimates.filter((pl.col("kind") == "difference") & (pl.col("policy") != baseline))
    frame = diff if diff.height else estimates.filter(pl.col("kind") == "value")
    return {str(m): _one_metric(sub, candidates, default)
            for (m,), sub in frame.group_by("metric", maintain_order=True)}


def chosen_estimators(choices: dict[str, Any]) -> dict[str, str]:
    """metric → the estimator `choose_headlines` chose for it."""
    return {metric: str(choice["estimator"]) for metric, choice in choices.items()}


def headline_rows(estimates: pl.DataFrame, chosen: dict[str, str]) -> pl.DataFrame:
    """The rows of ``estimates`` (long form) of each metric's chosen estimator; metrics without a choice are dropped."""
    pairs = pl.DataFrame({"metric": list(chosen), "estimator": list(chosen.values())},
                         schema={"metric": estimates.schema["metric"], "estimator": estimates.schema["estimator"]})
    return estimates.join(pairs, on=["metric", "estimator"], how="semi", maintain_order="left")
