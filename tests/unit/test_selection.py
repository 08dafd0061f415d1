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


def test_the_headline_rows_follow_the_choice_per_metric(capsys: pytest.CaptureFixture[str]) -> None:
    """Each metric's headline quotes its own chosen estimator: the rows, the console table's estimator line, the
    report's headline cells (estimator under each metric, an impossible-value mark only for the quoted estimator)."""
    from ope.data.schema import METRICS
    from ope.evaluation.headline import headline_rows
    from ope.report.console import print_estimates
    from ope.report.html import _headline

    est = pl.DataFrame([_rows(p, m, k, e, v, 0.1) for p in ("base", "a") for m in METRICS for k in ("value", "relative")
                        for e, v in (("DR", 0.5), ("SNIPS", 0.7)) if p == "a" or k == "value"])
    chosen = dict.fromkeys(METRICS, "DR") | {"success": "SNIPS"}
    rows = headline_rows(est, chosen)
    assert rows.height == 3 * len(METRICS)
    assert rows.filter(pl.col("metric") == "success")["estimator"].unique().to_list() == ["SNIPS"]
    assert set(rows.filter(pl.col("metric") != "success")["value"].to_list()) == {0.5}
    print_estimates(rows, ["base", "a"], "t", estimators=chosen)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("estimator"))
    assert line.split()[1:] == ["DR", "SNIPS", "DR", "DR", "DR", "DR"]  # the shown columns: cost, success, satisf., …
    cell = {"value": 1.2, "ci_low": 1.1, "ci_high": 1.3, "stderr": 0.1}
    finding = {"policy": "a", "metric": "success", "estimator": "DR", "value": 1.2, "range": "[0, 1]", "reason": "r",
               "suggestion": "s"}
    info = {"primary_estimator": "DR", "headline_estimators": chosen, "out_of_range": [finding],
            "policies": {"a": {"value": dict.fromkeys(METRICS, cell), "relative": {}}}}
    html = _headline(info)
    assert "success rate<br><span class='muted'>SNIPS</span>" in html and "⚠ impossible" not in html  # DR's finding, not quoted
    assert "⚠ impossible" in _headline(info | {"headline_estimators": chosen | {"success": "DR"}})
