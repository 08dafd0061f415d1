"""Impossible estimates are flagged with a reason and a suggestion, in every output; never clipped."""

from __future__ import annotations

import math

import polars as pl
import pytest

from ope.data.schema import METRICS
from ope.evaluation.ranges import out_of_range
from ope.evaluation.tables import ESTIMATE_SCHEMA
from ope.report.console import print_estimates
from ope.report.html import _agreement, _headline


def _row(policy: str, metric: str, estimator: str, value: float, *, kind: str = "value", n: int = 1000,
         ess: float = 500.0) -> dict[str, object]:
    return {"policy": policy, "metric": metric, "estimator": estimator, "kind": kind, "value": value, "stderr": 0.01,
            "ci_low": value - 0.02, "ci_high": value + 0.02, "n": n, "ess": ess}


def _frame(*rows: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=ESTIMATE_SCHEMA)


@pytest.mark.parametrize(("row", "max_weight", "reason", "suggestion"), [
    (_row("p", "success", "IPS", 1.007, ess=20.0), 3.0, "few effective samples (ESS 20 of 1,000 rows, 2.0%)", "SNIPS or SNDR"),
    (_row("p", "latency_ms", "DR", -1301.0), 85.0, "extreme importance weights (largest 85)", "SNIPS or SNDR"),
    (_row("p", "success", "DR", 1.15), 3.0, ("the importance-weighted correction overshoots (ESS 500 of 1,000 rows; "
                                             "largest weight 3.0)"), "SNIPS or SNDR"),
    (_row("p", "satisfaction", "SNDR", -0.01), 3.0, "correction overshoots", "Read SNIPS"),
    (_row("p", "cost_usd", "DM", -0.001), 3.0, "the outcome model predicts outside the range", "SNIPS or SNDR"),
], ids=["few-samples", "extreme-weights", "overshoot", "sndr", "dm"])
def test_out_of_range_says_why_and_what_to_use(row: dict[str, object], max_weight: float, reason: str, suggestion: str) -> None:
    (found,) = out_of_range(_frame(row), {"p": {str(row["estimator"]): {"max_weight": max_weight}}})
    assert reason in found.reason and suggestion in found.suggestion
    assert found.value == row["value"]                       # reported as estimated, never clipped
    assert found.message().startswith(f"p: {row['estimator']} {row['metric']} = ")


def test_in_range_differences_nan_and_rounding_are_not_flagged() -> None:
    frame = _frame(_row("p", "success", "IPS", 1.0 + 1e-12), _row("p", "success", "IPS", -0.3, kind="difference"),
                   _row("p", "latency_ms", "IPS", math.nan), _row("p", "throughput_tps", "DR", 0.0),
                   _row("p", "cost_usd", "SNIPS", 0.0031))
    assert out_of_range(frame, {}) == []


def test_console_marks_impossible_values_and_prints_footnotes_only_when_used(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = ("cost_usd", "success", "satisfaction", "latency_ms", "throughput_tps", "sla_hit")
    frame = _frame(*[_row("base", m, "DR", 0.5) for m in metrics])
    print_estimates(frame, ["base"], "t")
    out = capsys.readouterr().out
    assert "marks" not in out                                       # nothing marked: no footnote
    frame = _frame(*[_row("base", m, "DR", 1.2 if m == "success" else 0.5) for m in metrics])
    print_estimates(frame, ["base"], "t", frozenset({("base", "success")}))
    out = capsys.readouterr().out
    assert "!1.200" in out and "(! marks an impossible value" in out and "~ marks" not in out


def test_report_marks_impossible_cells() -> None:
    finding = {"policy": "p", "metric": "success", "estimator": "DR", "value": 1.15, "range": "[0, 1]",
               "reason": "few effective samples <b>", "suggestion": "Prefer SNIPS or SNDR"}
    cell = {"value": 1.15, "ci_low": 1.1, "ci_high": 1.2, "stderr": 0.02}
    info = {"primary_estimator": "DR", "out_of_range": [finding],
            "policies": {"p": {"value": dict.fromkeys(METRICS, cell), "relative": {}}}}
    html = _headline(info)
    assert html.count("⚠ impossible: must be [0, 1]") == 1 and "few effective samples &lt;b&gt;" in html
    assert "⚠ impossible" in _agreement(_frame(_row("p", "success", "DR", 1.15)), info)
    assert "⚠" not in _agreement(_frame(_row("p", "success", "IPS", 0.9)), info)


@pytest.mark.parametrize(("count", "text"), [(1, "p: 1 request was routed"), (2, "p: 2 requests were routed"),
                                                  (1234, "p: 1,234 requests were")])
def test_counts_agree_with_their_noun(count: int, text: str) -> None:
    from ope.evaluation.plan import fallback_note

    assert fallback_note("p", count, "cheapest").startswith(text)
