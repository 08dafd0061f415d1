"""The report's tail-latency section: each policy's p50 … p99 of TTFT, latency, cost and throughput with intervals, the
paired difference against the baseline, and a CDF plot per metric (quantiles.csv, cdf.csv)."""

from __future__ import annotations

from typing import Any

import polars as pl

from ope.data.schema import LOWER_IS_BETTER
from ope.evaluation.distributions import quantile_headline
from ope.report.markup import esc, num, table
from ope.report.plots import METRIC_LABELS, cdf_plot

__all__ = ["headline_tails", "tails_section"]

#: the tail columns of the headline table
HEADLINE_TAILS = ("ttft_ms", "latency_ms")


def _cell(value: dict[str, Any] | None, diff: dict[str, Any] | None, metric: str) -> str:
    """A quantile with its interval below, then its paired difference vs the baseline, coloured when significant."""
    if value is None:
        return "–"
    cell = f"{num(value['value'], metric)}<br><span class='muted'>[{num(value['ci_low'], metric)}, {num(value['ci_high'], metric)}]</span>"
    if diff is not None and diff["value"] == diff["value"]:
        sig = diff["ci_low"] > 0 or diff["ci_high"] < 0
        better = (diff["value"] < 0) == (metric in LOWER_IS_BETTER)
        cls = ("good" if better else "bad") if sig else "muted"
        cell += (f"<br><span class='{cls}'>{diff['value']:+,.4g} [{diff['ci_low']:+,.4g}, {diff['ci_high']:+,.4g}]</span>")
    return cell


def headline_tails(info: dict[str, Any], name: str) -> list[str]:
    """The headline table's p95 TTFT and p95 latency cells of policy ``name`` (summary.json's ``quantiles``)."""
    policy = info.get("quantiles", {}).get("policies", {}).get(name, {})
    return [_cell(policy.get("value", {}).get(m, {}).get("p95"), policy.get("difference", {}).get(m, {}).get("p95"), m)
            for m in HEADLINE_TAILS]


def tails_section(quantiles: pl.DataFrame, cdfs: pl.DataFrame, baseline: str) -> str:
    """Quantile table and CDF plot of the quantile headline estimator, or a line saying none were estimated."""
    if quantiles.height == 0:
        return "<p>Distributions were not estimated ([evaluation] distributions = false, or no IPS, SNIPS or DR).</p>"
    est = quantile_headline(quantiles["estimator"].unique(maintain_order=True).to_list())
    q = quantiles.filter(pl.col("estimator") == est)
    levels = q["quantile"].unique(maintain_order=True).to_list()
    rows = []
    for (policy, metric), sub in q.group_by(["policy", "metric"], maintain_order=True):
        by = {(r["kind"], r["quantile"]): r for r in sub.iter_rows(named=True)}
        rows.append([esc(policy), esc(METRIC_LABELS.get(str(metric), str(metric)))]
                    + [_cell(by.get(("value", p)), by.get(("difference", p)), str(metric)) for p in levels])
    metrics = cdfs["metric"].unique(maintain_order=True).to_list()
    return (f"<p class='muted'>{esc(est)} quantiles with their 95 % intervals (Woodruff: the CDF's pointwise interval inverted); "
            f"below, the paired difference against {esc(baseline)} in the metric's unit. Every estimator's numbers are in "
            "quantiles.csv and cdf.csv.</p>"
            + table(["policy", "metric"] + [f"p{round(100 * p)}" for p in levels], rows, left=2)
            + f"<p class='muted'>{esc(est)} CDF of each policy with its 95 % band that holds at every threshold at once (sup-t; "
            "pointwise bands are in cdf.csv); the dotted line is 0.95.</p>"
            + cdf_plot(cdfs.filter(pl.col("estimator") == est), metrics))
