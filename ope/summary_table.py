"""The compact table `ope run` prints at the end."""

from __future__ import annotations

import polars as pl

from ope.runner import RunResult

__all__ = ["print_summary"]

SHOWN = (("cost_usd", "cost $", "{:.6f}"), ("success", "success", "{:.3f}"), ("satisfaction", "satisf.", "{:.3f}"),
         ("latency_ms", "latency ms", "{:,.0f}"), ("throughput_tps", "tok/s", "{:.1f}"), ("sla_hit", "SLA hit", "{:.3f}"))


def print_summary(result: RunResult, estimator: str) -> None:
    """Per policy: the estimator's value and, for non-baselines, the relative change vs the baseline."""
    est = result.estimates.filter(pl.col("estimator") == estimator)
    width = max(len(n) for n in result.probabilities) + 2
    print(f"\n{estimator} estimates, change vs {result.config.evaluation.baseline} in parentheses")
    print("policy".ljust(width) + "".join(label.rjust(20) for _, label, _ in SHOWN))
    for name in result.probabilities:
        cells = []
        for metric, _, fmt in SHOWN:
            sub = est.filter((pl.col("policy") == name) & (pl.col("metric") == metric))
            value = sub.filter(pl.col("kind") == "value")["value"][0]
            rel = sub.filter(pl.col("kind") == "relative")
            cell = fmt.format(value)
            if rel.height:
                r = rel.row(0, named=True)
                significant = not (r["ci_low"] <= 0 <= r["ci_high"])
                cell += f" ({'' if significant else '~'}{r['value']:+.1f}%)" if r["value"] == r["value"] else " (n/a)"
            cells.append(cell.rjust(20))
        print(name.ljust(width) + "".join(cells))
    print("(~ marks a change whose interval includes 0)")
    notes = result.warnings
    for note in notes[:6]:
        print(f"warning: {note}")
    if len(notes) > 6:
        print(f"... and {len(notes) - 6} more warnings in the report")
