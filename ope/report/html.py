"""Render report.html: one self-contained page (inline CSS and SVG), every logged string escaped."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl

from ope.config import to_toml
from ope.data.schema import LOWER_IS_BETTER, METRICS
from ope.evaluation.headline import headline_rows
from ope.evaluation.run import RunResult
from ope.report.diagnostics import diagnostics_section, models_section
from ope.report.markup import CSS, esc, num, table
from ope.report.plots import METRIC_LABELS, forest_plot, time_plot
from ope.report.tails import headline_tails, tails_section

__all__ = ["CSS", "esc", "num", "render", "table"]

GLOSSARY = [
    ("Value", "The policy's estimated average per request over the logged traffic (weighted by sample_weight), with its interval."),
    ("Relative change", "100 · (policy / baseline − 1), in percent of the baseline's value — for rates (success, "
     "satisfaction, SLA hit) a relative percent, not percentage points. Paired: both policies on the same requests."),
    ("Interval", "A two-sided confidence interval at the stated level; ± in tables is one standard error."),
    ("IPS", "Inverse propensity scoring: logged outcomes reweighted by π(a|x) / p. Unbiased with correct propensities, noisy."),
    ("SNIPS", "Self-normalised IPS: divides by the sum of weights. Slightly biased, far less noisy, stays within the outcome range."),
    ("DM", "Direct method: averages the outcome model's predictions. Low noise, biased wherever the model is wrong."),
    ("DR / SNDR", "Doubly robust: DM plus an importance-weighted correction of its errors. Right if either the model or the propensities are."),
    ("Switch-DR / DRos", "DR variants that switch off or shrink large weights; the level is chosen from the data (shown in diagnostics)."),
    ("ESS", "Effective sample size of the importance weights: how many logged requests the estimate is really worth."),
    ("Unsupported mass", "Share of the policy's routing on arms the logger never used in that context: no estimator can see it without a model."),
    ("Mean weight", "Average importance weight; about 1 when propensities are right. 'Flagged' when it is clearly not."),
]


def _impossible(info: dict[str, Any], estimator: str | None = None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(policy, metric, estimator) → the out-of-range finding, for marking cells."""
    return {(f["policy"], f["metric"], f["estimator"]): f for f in info.get("out_of_range", [])
            if estimator is None or f["estimator"] == estimator}


def _mark(finding: dict[str, Any] | None) -> str:
    if finding is None:
        return ""
    return (f"<br><span class='bad' title='{esc(finding['reason'])}. {esc(finding['suggestion'])}'>⚠ impossible: must be "
            f"{esc(finding['range'])}</span>")


def headline_estimator(info: dict[str, Any], metric: str) -> str:
    """The estimator a metric's headline quotes (summary.json's ``headline_estimators``; the primary one before them)."""
    return str(info.get("headline_estimators", {}).get(metric, info["primary_estimator"]))


def _headline_by(info: dict[str, Any]) -> str:
    """``DR`` when every metric's headline uses it, else ``cost_usd SNIPS, success DR, …``."""
    chosen = {m: headline_estimator(info, m) for m in METRICS}
    names = set(chosen.values())
    return esc(names.pop()) if len(names) == 1 else ", ".join(f"{esc(m)} {esc(e)}" for m, e in chosen.items())


def _headline(info: dict[str, Any]) -> str:
    tails = bool(info.get("quantiles", {}).get("policies"))
    head = (["policy"] + [f"{esc(METRIC_LABELS[m])}<br><span class='muted'>{esc(headline_estimator(info, m))}</span>"
                          for m in METRICS] + (["p95 TTFT (ms)", "p95 latency (ms)"] if tails else []))
    rows = []
    flagged = _impossible(info)
    for name, h in info["policies"].items():
        cells = [esc(name)]
        for m in METRICS:
            v = h["value"].get(m)
            cell = f"{num(v['value'], m)}<br><span class='muted'>[{num(v['ci_low'], m)}, {num(v['ci_high'], m)}]</span>"
            cell += _mark(flagged.get((name, m, headline_estimator(info, m))))
            rel = h["relative"].get(m)
            if rel is not None and not np.isfinite(rel["value"]):
                cell += "<br><span class='muted'>n/a (baseline is 0)</span>"
            elif rel is not None:
                better = (rel["value"] < 0) == (m in LOWER_IS_BETTER)
                sig = rel["ci_low"] > 0 or rel["ci_high"] < 0
                cls = ("good" if better else "bad") if sig else "muted"
                cell += f"<br><span class='{cls}'>{rel['value']:+.1f}% [{rel['ci_low']:+.1f}, {rel['ci_high']:+.1f}]</span>"
            cells.append(cell)
        rows.append(cells + (headline_tails(info, name) if tails else []))
    return table(head, rows)


def _agreement(est: pl.DataFrame, info: dict[str, Any]) -> str:
    values = est.filter(pl.col("kind") == "value")
    names = values["estimator"].unique(maintain_order=True).to_list()
    flagged = _impossible(info)
    rows = []
    for (policy, metric), sub in values.group_by(["policy", "metric"], maintain_order=True):
        by = {r["estimator"]: r for r in sub.iter_rows(named=True)}
        rows.append([esc(policy), esc(metric)] + [f"{num(by[n]['value'], str(metric))} ± {num(by[n]['stderr'], str(metric))}"
                                                  + _mark(flagged.get((str(policy), str(metric), n))) if n in by else "–"
                                                  for n in names])
    return table(["policy", "metric"] + [esc(n) for n in names], rows, left=2)


BREAKDOWN_METRICS = ("cost_usd", "success", "satisfaction", "latency_ms", "sla_hit")


def _interval(row: dict[str, Any], metric: str) -> str:
    """A group's value with its interval below it."""
    if row["value"] is None:
        return "–"
    return f"{num(row['value'], metric)}<br><span class='muted'>[{num(row['ci_low'], metric)}, {num(row['ci_high'], metric)}]</span>"


def _breakdowns(frame: pl.DataFrame, estimator: str) -> str:
    if frame.height == 0:
        return "<p>No breakdowns.</p>"
    parts = [f"<p class='muted'>{esc(estimator)} value of each policy within each group, its interval below; groups with "
             "fewer than 200 logged requests are listed without estimates.</p>"]
    for by in frame["by"].unique(maintain_order=True).to_list():
        sub = frame.filter(pl.col("by") == by)
        policies = [p for p in sub["policy"].unique(maintain_order=True).to_list() if p is not None]
        groups = sub.select("group", "n").unique(maintain_order=True).rows()
        tables = []
        for metric in BREAKDOWN_METRICS:
            msub = sub.filter(pl.col("metric") == metric)
            value = {(r["group"], r["policy"]): r for r in msub.iter_rows(named=True)}
            rows = [[esc(g), f"{int(n):,}"] + [_interval(value[(g, p)], metric) if (g, p) in value else "–" for p in policies]
                    for g, n in groups]
            tables.append(f"<div><b>{esc(METRIC_LABELS[metric])}</b>" + table([esc(by), "rows"] + [esc(p) for p in policies], rows) + "</div>")
        parts.append(f"<h3>By {esc(by)}</h3><div class='grid'>" + "".join(tables) + "</div>")
    return "".join(parts)


def _shares(frame: pl.DataFrame) -> str:
    cols = frame.columns[1:]
    rows = [[esc(r["provider"])] + [f"{r[c]:.1%}" if r[c] > 0 else "–" for c in cols] for r in frame.iter_rows(named=True)]
    return "<p class='muted'>Share of requests each policy routes to each provider (expected, from its action probabilities); 'logged' is what the log shows.</p>" + table(["provider"] + [esc(c) for c in cols], rows)


def _data_table(data: dict[str, Any]) -> str:
    labels = {"logs": "log file", "catalog": "catalog file", "rows": "rows evaluated", "quarantined_rows": "rows set aside",
              "rows_with_feedback": "rows with satisfaction feedback",
              "rows_with_satisfaction": "rows in the satisfaction metric (feedback, or a failure counted 0)",
              "start": "first request", "end": "last request"}
    rows = [[esc(label), esc(f"{data[k]:,}" if isinstance(data[k], int) else data[k])] for k, label in labels.items() if k in data]
    rows += [[f"SHA-256 of the {esc(k)}", f"<code>{esc(v)}</code>"] for k, v in data["sha256"].items()]
    return table(["", ""], rows)


def headline_section(choice: dict[str, Any]) -> str:
    """Which estimator the report trusts per metric, and why (issue 22; kept apart from the rest of the page)."""
    rows = [[esc(m), f"<b>{esc(c['estimator'])}</b>", esc(c["reason"])] for m, c in choice.items()]
    return "<h2>Which estimator to trust</h2>" + (table(["metric", "estimator", "why"], rows) if rows else "")


def _targets(info: dict[str, Any]) -> str:
    """Every declared target against the headline interval, the routers' certificates, and how learned policies were evaluated."""
    if not info["targets"]:
        return "<p class='muted'>No policy declares a target.</p>"
    certs = {(name, t["key"]): t for name, c in info["certification"].items() for t in c["targets"]}
    rows = []
    for t in info["targets"]:
        c = certs.get((t["policy"], t["key"]))
        verdict = {"holds": "good", "fails": "bad"}.get(t["verdict"], "")
        rows.append([esc(t["policy"]), esc(f"{t['metric']} {'≥' if t['relation'] == '>=' else '≤'} {t['target']:g}"),
                     num(c["solved_at"], t["metric"]) if c else "–", num(c["predicted"], t["metric"]) if c else "–",
                     f"{num(c['estimate'], t['metric'])} (bound {num(c['bound'], t['metric'])})" if c else "–",
                     f"{num(t['estimate'], t['metric'])} [{num(t['ci'][0], t['metric'])}, {num(t['ci'][1], t['metric'])}]",
                     f"<span class='{verdict}'>{esc(t['verdict'])}</span>"])
    head = ["policy", "target", "solved for", "predicted (q̂)", "certified: DR on held-out folds", f"{info['primary_estimator']} "
            f"{1 - info['alpha']:.0%} interval", "verdict"]
    notes = [f"{esc(n)}: {esc(c['status'])}" + (f" — {esc(c['reason'])}" if c["reason"] else "") for n, c in info["certification"].items()]
    notes += [f"{esc(n)}: {esc(how)}" for n, how in info["evaluated_as"].items()]
    return (table(head, rows) + "<p class='muted'>holds: the whole interval is on the target's side; fails: the whole interval "
            "is on the wrong side; not shown to hold: the interval straddles the target.</p>"
            + "".join(f"<p class='muted'>{n}</p>" for n in notes))


def render(result: RunResult, info: dict[str, Any]) -> str:
    """The whole report page."""
    est = result.estimates
    data = info["data"]
    rel = headline_rows(est.filter(pl.col("kind") == "relative"), {m: headline_estimator(info, m) for m in METRICS})
    warnings_ = list(info["warnings"])
    if data["rows_with_satisfaction"] < data["rows"]:
        warnings_.append(f"Satisfaction is evaluated on the {data['rows_with_satisfaction']:,} of {data['rows']:,} rows that have "
                         "feedback or failed (a failure without feedback counts 0).")
    warn_html = "".join(f"<div class='warn'>{esc(w)}</div>" for w in warnings_) or "<p class='good'>No support or overlap problems found.</p>"
    slices = result.slices
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>llm-ope report — {esc(info['run_name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Counterfactual routing report: {esc(info['run_name'])}</h1>",
        f"<p class='muted'>Created {esc(info['created'])} from {esc(info['config_file'])}. Baseline: <b>{esc(info['baseline'])}</b>. "
        f"Headline estimator: <b>{_headline_by(info)}</b> (see “Which estimator to trust”), {1 - info['alpha']:.0%} intervals: "
        f"{esc(info.get('interval_methods', {}).get('estimates', info['inference']))}; breakdowns by period, model and task: normal. "
        f"SLA: latency ≤ {info['sla_latency_ms']:,.0f} ms. "
        f"Propensities: {esc(info['propensities'])}.</p>",
        "<h2>Warnings and support</h2>", warn_html,
        "<h2>Targets</h2>", _targets(info),
        "<h2>Headline: each policy against the baseline</h2>",
        ("<p class='muted'>Per request averages with intervals, each metric by the estimator named under it; below, the "
         "paired relative change vs the baseline (green: better and significant, red: worse and significant).</p>"),
        _headline(info),
        models_section(info),
        "<h2>Tail latency and distributions</h2>", tails_section(result.quantiles, result.cdfs, info["baseline"]),
        "<h2>Relative change against the baseline</h2>", forest_plot(rel, list(METRICS)) if rel.height else "<p>Only the baseline was evaluated.</p>",
        "<h2>Over time</h2>", f"<p class='muted'>{esc(slices['estimator'][0] if slices.height else '')} estimate per {esc(result.config.evaluation.time_slice)}.</p>",
        time_plot(slices, list(METRICS)) if slices.height else "<p>Not enough rows per period.</p>",
        "<h2>Diagnostics</h2>", diagnostics_section(info),
        "<h2>Estimator agreement</h2>",
        "<p class='muted'>Value ± one standard error by estimator. Large disagreement means few effective samples or a poor outcome model.</p>",
        _agreement(est, info),
        headline_section(info.get("headline_by_metric", {})),
        "<h2>Breakdowns by model and task</h2>", _breakdowns(result.breakdowns, info["primary_estimator"]),
        "<h2>Traffic per provider</h2>", _shares(result.shares),
        "<h2>Data</h2>",
        _data_table(data),

        "<h2>Glossary</h2>", "<dl>" + "".join(f"<dt><b>{esc(t)}</b></dt><dd>{esc(d)}</dd>" for t, d in GLOSSARY) + "</dl>",
        "<h2>Reproducibility</h2>",
        table(["package", "version"], [[esc(k), esc(v)] for k, v in info["versions"].items()]),
        f"<p>Config as used (overrides applied, paths resolved; from {esc(info['config_file'])}):</p><pre>{esc(to_toml(result.config))}</pre>",
        f"<p class='muted'>Timings (s): {esc(json.dumps(info['timings_s']))}</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
