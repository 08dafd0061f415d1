"""The compact table `ope run` prints at the end."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from ope.evaluation.certify import Certification
from ope.evaluation.distributions import quantile_headline
from ope.evaluation.headline import headline_rows
from ope.evaluation.run import RunResult
from ope.evaluation.targets import FAILS

if TYPE_CHECKING:
    from ope.evaluation.tune import TuneResult

__all__ = ["format_validation", "print_estimates", "print_summary", "print_targets", "print_tune_table"]

_NONE = Certification("", 0, 0.0, 0, "not checked")

SHOWN = (("cost_usd", "cost $", "{:.6f}"), ("success", "success", "{:.3f}"), ("satisfaction", "satisf.", "{:.3f}"),
         ("latency_ms", "latency ms", "{:,.0f}"), ("throughput_tps", "tok/s", "{:.1f}"), ("sla_hit", "SLA hit", "{:.3f}"))


#: tail columns: the p95 of TTFT and latency, with the paired difference vs the baseline (quantiles.csv)
TAILS = (("ttft_ms", "p95 TTFT ms"), ("latency_ms", "p95 latency ms"))


def _tail_cells(tails: pl.DataFrame, name: str) -> list[str]:
    """The p95 TTFT and latency of a policy, with its paired difference vs the baseline (``~``: the interval includes 0)."""
    cells = []
    for metric, _ in TAILS:
        sub = tails.filter((pl.col("policy") == name) & (pl.col("metric") == metric) & (pl.col("quantile") == 0.95))
        value = sub.filter(pl.col("kind") == "value")
        cell = f"{value['value'][0]:,.0f}" if value.height and value["value"][0] == value["value"][0] else "n/a"
        diff = sub.filter(pl.col("kind") == "difference")
        if diff.height and diff["value"][0] == diff["value"][0]:
            r = diff.row(0, named=True)
            cell += f" ({'' if not (r['ci_low'] <= 0 <= r['ci_high']) else '~'}{r['value']:+,.0f})"
        cells.append(cell.rjust(22))
    return cells


def print_estimates(est: pl.DataFrame, names: list[str], title: str, impossible: frozenset[tuple[str, str]] = frozenset(),
                    estimators: dict[str, str] | None = None, tails: pl.DataFrame | None = None) -> None:
    """One line per policy in ``names``: values of the shown metrics and, where present, the relative change; with
    ``tails`` (one estimator's rows of quantiles.csv) the p95 TTFT and latency and their paired difference in ms.

    ``impossible`` holds (policy, metric) pairs whose value lies outside the metric's range: marked ``!``;
    ``estimators`` (metric → name), when given, is printed as a line under the header: which estimator each column quotes.
    """
    width = max(len(n) for n in names) + 2
    tails = None if tails is None or tails.height == 0 else tails
    print(f"\n{title}")
    print("policy".ljust(width) + "".join(label.rjust(20) for _, label, _ in SHOWN)
          + ("" if tails is None else "".join(label.rjust(22) for _, label in TAILS)))
    if estimators is not None:
        print("estimator".ljust(width) + "".join(estimators.get(metric, "–").rjust(20) for metric, _, _ in SHOWN))
    marks = set()
    for name in names:
        cells = []
        for metric, _, fmt in SHOWN:
            sub = est.filter((pl.col("policy") == name) & (pl.col("metric") == metric))
            value = sub.filter(pl.col("kind") == "value")["value"][0]
            cell = fmt.format(value) if value == value else "n/a"
            if (name, metric) in impossible:
                cell, _ = "!" + cell, marks.add("!")
            rel = sub.filter(pl.col("kind") == "relative")
            if rel.height:
                r = rel.row(0, named=True)
                significant = not (r["ci_low"] <= 0 <= r["ci_high"])
                marks.update(() if significant or r["value"] != r["value"] else ("~",))
                cell += f" ({'' if significant else '~'}{r['value']:+.1f}%)" if r["value"] == r["value"] else " (n/a)"
            cells.append(cell.rjust(20))
        print(name.ljust(width) + "".join(cells + ([] if tails is None else _tail_cells(tails, name))))
    if "~" in marks:
        print("(~ marks a change whose interval includes 0)")
    if "!" in marks:
        print("(! marks an impossible value, outside the metric's range: see the warnings below)")


def print_summary(result: RunResult, chosen: dict[str, str]) -> None:
    """Missed targets first; per policy each metric's headline value (the estimator ``chosen`` for it, metric → name)
    and, for non-baselines, the relative change vs the baseline; then every declared target, how learned policies
    were evaluated, and the other warnings."""
    missed = [t.warning for t in result.targets if t.verdict == FAILS]
    for line in missed:
        print(f"warning: {line}")
    est = headline_rows(result.estimates, chosen)
    flagged = [f for f in result.out_of_range if chosen.get(f.metric) == f.estimator]
    impossible = frozenset((f.policy, f.metric) for f in flagged)
    names = sorted(set(chosen.values()))
    title = (f"{names[0]} estimates" if len(names) == 1 else "Headline estimates (the estimator each metric trusts, below)")
    quantiles = result.quantiles
    tail = quantile_headline(quantiles["estimator"].unique(maintain_order=True).to_list()) if quantiles.height else None
    title += f", change vs {result.config.evaluation.baseline} in parentheses" + (f"; p95 by {tail}, difference in ms" if tail else "")
    print_estimates(est, result.names, title, impossible, None if len(names) == 1 else chosen,
                    None if tail is None else quantiles.filter(pl.col("estimator") == tail))
    print_targets(result)
    headline = [f.message() for f in flagged]
    notes = headline + [w for w in result.warnings if w not in headline and w not in missed]
    for note in notes[:6]:
        print(f"warning: {note}")
    if len(notes) > 6:
        print(f"... and {len(notes) - 6} more warnings in the report")


def print_headlines(info: dict[str, Any]) -> None:
    """Which estimator the report trusts per metric, and why (summary.json's ``headline_by_metric``)."""
    for metric, choice in info.get("headline_by_metric", {}).items():
        print(f"trust:     {metric:<15} {choice['estimator']:<8} {choice['reason']}")


def _shares(shares: dict[str, float], top: int = 6) -> str:
    """``a 32.1 %, b 25.0 %, … (3 more)`` for a share table sorted by frequency."""
    items = [f"{k} {100 * v:.1f} %" for k, v in list(shares.items())[:top]]
    more = len(shares) - top
    return ", ".join(items) + (f", … ({more} more)" if more > 0 else "")


def format_validation(path: str, summary: dict[str, Any]) -> str:
    """`ope validate`'s summary for a person: rows, span, arms, models, tasks, status mix, propensity share."""
    lines = [f"{path}: valid"]
    set_aside = f" ({summary['quarantined']:,} set aside)" if summary.get("quarantined") else ""
    lines.append(f"  rows          {summary['rows']:,}{set_aside}")
    if summary["rows"]:
        start, end = datetime.fromisoformat(summary["start"]), datetime.fromisoformat(summary["end"])
        days = (end - start).total_seconds() / 86400
        lines += [
            f"  span          {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({days:.1f} days)",
            f"  arms          {summary['arms']:,}, serving {len(summary['models'])} model(s)",
            f"  models        {_shares(summary['models'])}",
            f"  tasks         {_shares(summary['tasks'])}",
            f"  status        {_shares(summary['status'])}",
            f"  propensities  logged on {100 * summary['with_propensity']:.1f} % of rows"
            + ("" if summary["with_propensity"] == 1 else " (the rest are estimated by a model in a run)"),
            f"  satisfaction  feedback on {100 * summary['with_satisfaction']:.1f} % of rows",
        ]
    return "\n".join(lines)


def print_targets(result: RunResult) -> None:
    """Each declared target with its verdict (and certificate), then how each learned policy was evaluated."""
    if result.targets:
        level = f"{1 - result.config.evaluation.alpha:.0%}"
        print(f"\ndeclared targets against the {level} interval")
    for t in result.targets:
        cert = next((c for c in result.certificates.get(t.policy, _NONE).targets if c.key == t.key), None)
        solved = "" if cert is None or cert.solved_at == t.target else f"; solved for {cert.solved_at:.4g}"
        print(f"  {t.policy}: {t.metric} {t.relation} {t.target:g} — {t.estimate:.4g} [{t.ci_low:.4g}, {t.ci_high:.4g}]: "
              f"{t.verdict}{solved}")
    for name, cert in result.certificates.items():
        print(f"  {name}: {cert.status}" + (f" ({cert.reason})" if cert.reason else ""))
    for name, how in result.evaluated_as.items():
        print(f"{name}: {how}")


def print_tune_table(result: TuneResult) -> None:
    """The sweep at a glance: the baseline and every fitted setting on the hold-out window, marked safe or not."""
    marks = {"safe": "✓", "unsafe": "✗"}
    names, frames = ["baseline"], [result.baseline.with_columns(pl.lit("baseline").alias("policy"))]
    for i, p in enumerate(result.points):
        if p.estimates is not None:
            names.append(f"{marks[p.status]}{'★' if i == result.recommended else ' '} {p.label}")
            frames.append(p.estimates.with_columns(pl.lit(names[-1]).alias("policy")))
    infeasible = [p.label for p in result.points if p.status == "infeasible"]
    title = (f"{result.estimator} on the hold-out window, change vs {result.config.evaluation.baseline} in parentheses "
             "(✓ safe, ✗ fails a target at its bound, ★ recommended)")
    labels = dict(zip(["baseline"] + [p.label for p in result.points if p.estimates is not None], names, strict=True))
    impossible = frozenset((labels[f.policy], f.metric) for f in result.out_of_range)
    print_estimates(pl.concat(frames), names, title, impossible)
    for finding in result.out_of_range:
        print(f"warning: {finding.message()}")
    if infeasible:
        print(f"infeasible on the training window: {'; '.join(infeasible)}")
