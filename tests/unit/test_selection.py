"""SLOPE estimator selection: hand-worked orderings and the per-metric headline."""

from __future__ import annotations

import math

import polars as pl
import pytest

from estimators.selection import SLOPE_C, slope
from ope.evaluation.headline import choose_headlines


def test_the_constant_is_sqrt6_minus_1() -> None:
    assert SLOPE_C == math.sqrt(6) - 1


@pytest.mark.parametrize(("values", "half", "expected"), [
    # widths 0.5 > 0.2 > 0.05: DR within 0.5 + C·... of IPS, DM 0.9 from DR > 0.05 + C·0.2 = 0.339: DR
    ([1.0, 1.1, 2.0], [0.5, 0.2, 0.05], 1),
    # DM 1.2: |1.2 − 1.0| = 0.2 ≤ 0.05 + C·0.5 = 0.775 and |1.2 − 1.1| = 0.1 ≤ 0.05 + C·0.2 = 0.339: DM
    ([1.0, 1.1, 1.2], [0.5, 0.2, 0.05], 2),
    # order comes from the widths, not the list: IPS (widest) then DR; DR's gap 2.0 > 0.2 + C·0.5 = 0.925: IPS
    ([1.0, 3.0, 1.0], [0.5, 0.2, float("nan")], 0),
])
def test_slope_by_hand(values: list, half: list, expected: int) -> None:
    assert slope(["IPS", "DR", "DM"], values, half).index == expected


def test_no_finite_candidate_is_undecided() -> None:
    assert slope(["IPS"], [float("nan")], [1.0]).index is None


def _rows(policy: str, metric: str, kind: str, estimator: str, value: float, half: float) -> dict:
    return {"policy": policy, "metric": metric, "kind": kind, "estimator": estimator, "value": value,
            "ci_low": value - half, "ci_high": value + half}


def test_headline_per_metric_with_reason_and_dr_when_undecided() -> None:
    est = pl.DataFrame([
        _rows("a", "cost_usd", "difference", "IPS", 1.0, 0.5), _rows("a", "cost_usd", "difference", "DR", 1.1, 0.2),
        _rows("a", "cost_usd", "difference", "DM", 2.0, 0.05),
        _rows("a", "success", "difference", "IPS", float("nan"), 0.5), _rows("a", "success", "difference", "DR", float("nan"), 0.2),
        _rows("a", "success", "difference", "DM", float("nan"), 0.1),
    ])
    out = choose_headlines(est, "base", ["IPS", "DR", "DM"])
    # DM is no candidate beside importance-weighted estimators (its interval cannot show the model's bias)
    assert out["cost_usd"]["estimator"] == "DR" and "narrowest interval, consistent with every wider one" in out["cost_usd"]["reason"]
    assert choose_headlines(est, "base", ["DM"])["cost_usd"]["estimator"] == "DM"  # a deterministic logger leaves DM alone
    assert out["success"]["estimator"] == "DR" and out["success"]["reason"].startswith("undecided")
    assert choose_headlines(est, "base", ["IPS", "DR", "DM"], "IPS")["cost_usd"]["reason"] == "fixed by [evaluation] headline"
