"""Write a sweep's results: tune.html (self-contained, with the Pareto plot), tune.json, tune.csv, policies/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ope.config import to_toml
from ope.evaluation.actions import file_stems
from ope.evaluation.tune import TuneResult
from ope.report.html import CSS, esc, num, table
from ope.report.outputs import data_hash, fresh_run_folder, json_safe, versions
from ope.report.plots import METRIC_LABELS, pareto_plot

__all__ = ["tune_summary", "write_tune_outputs"]

SHOWN = ("cost_usd", "sla_hit", "satisfaction", "throughput_tps")


def _metrics(estimates: pl.DataFrame, kind: str = "value") -> dict[str, dict[str, float]]:
    return {r["metric"]: {k: r[k] for k in ("value", "stderr", "ci_low", "ci_high")}
            for r in estimates.filter(pl.col("kind") == kind).iter_rows(named=True)}


def tune_summary(result: TuneResult, run_name: str) -> dict[str, Any]:
    """The machine-readable account of a sweep (tune.json)."""
    cfg, tune = result.config, result.tune
    pareto = set(result.pareto)
    return {
        "run_name": run_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_file": str(cfg.source),
        "policy": tune.policy,
        "baseline": cfg.evaluation.baseline,
        "estimator": result.estimator,
        "alpha_per_setting": result.alpha,
        "simultaneous": tune.simultaneous,
        "targets": {k: getattr(tune, k) for k in ("min_sla_hit", "min_satisfaction", "max_cost_usd") if getattr(tune, k) is not None},
        "grid": tune.grid,
        "split": {"train_fraction": tune.train_fraction, "split_at": result.split_at.isoformat(),
                  "train_rows": int(result.train.sum()), "holdout_rows": int((~result.train).sum())},
        "verdict": result.verdict,
        "out_of_range": [f.to_dict() for f in result.out_of_range],
        "recommended": None if result.recommended is None else result.points[result.recommended].label,
        "recommended_settings": None if result.recommended is None else result.points[result.recommended].settings,
        "baseline_values": _metrics(result.baseline),
        "points": [{
            "label": p.label, "settings": p.settings, "status": p.status, "reasons": list(p.reasons), "pareto": i in pareto,
            "fitted_values": None if p.policy is None else p.policy.fitted_values_,
            "certificate": None if p.policy is None else p.policy.certificate_,
            **({"value": _metrics(p.estimates), "difference": _metrics(p.estimates, "difference"),
                "relative": _metrics(p.estimates, "relative")} if p.estimates is not None else {}),
        } for i, p in enumerate(result.points)],
        "notes": list(result.notes),
        "data": {"logs": str(cfg.data.logs), "catalog": str(cfg.data.catalog),
                 "sha256": {"logs": data_hash(cfg.data.logs), "catalog": data_hash(cfg.data.catalog)}, "rows": result.dataset.n},
        "model_quality": None if result.outcome_models is None else result.outcome_models.quality,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "versions": versions(),
    }


def _plot_frame(result: TuneResult) -> pl.DataFrame:
    pareto = set(result.pareto)
    rows = []
    entries = [("baseline", "baseline", result.baseline, False, False)]
    entries += [(p.label, p.status, p.estimates, i in pareto, i == result.recommended)
                for i, p in enumerate(result.points) if p.estimates is not None]
    for label, status, est, front, best in entries:
        values = _metrics(est)
        row: dict[str, Any] = {"label": label, "status": status, "pareto": front, "recommended": best}
        for m in ("cost_usd", "sla_hit", "satisfaction"):
            row |= {m: values[m]["value"], f"{m}_lo": values[m]["ci_low"], f"{m}_hi": values[m]["ci_high"]}
        rows.append(row)
    return pl.DataFrame(rows)


def _cell(values: dict[str, dict[str, float]], metric: str, flagged: dict[str, Any] | None = None) -> str:
    v = values[metric]
    cell = f"{num(v['value'], metric)}<br><span class='muted'>[{num(v['ci_low'], metric)}, {num(v['ci_high'], metric)}]</span>"
    if flagged is not None:
        cell += (f"<br><span class='bad' title='{esc(flagged['reason'])}. {esc(flagged['suggestion'])}'>⚠ impossible: must be "
                 f"{esc(flagged['range'])}</span>")
    return cell


def _points_table(result: TuneResult, summary: dict[str, Any]) -> str:
    keys = sorted(result.tune.grid)
    head = [esc(k).replace("_", "_<wbr>") for k in keys] + ["status", *(esc(METRIC_LABELS[m]) for m in SHOWN), "Δ cost vs baseline",
                                     "expected when fitted (training window)"]
    base = summary["baseline_values"]
    flags = {(f["policy"], f["metric"]): f for f in summary["out_of_range"]}
    rows = [[f"<b>baseline</b>: {esc(result.config.evaluation.baseline)}"] + [""] * len(keys)
            + [_cell(base, m, flags.get(("baseline", m))) for m in SHOWN] + ["", ""]]
    for i, p in enumerate(summary["points"]):
        star = " ★ recommended" if i == result.recommended else ""
        cls = {"safe": "good", "unsafe": "bad", "infeasible": "muted"}[p["status"]]
        status = f"<span class='{cls}'><b>{p['status']}{star}</b></span>" + "".join(
            f"<br><span class='muted'>{esc(r)}</span>" for r in p["reasons"])
        settings = [f"{p['settings'][k]:g}" for k in keys]
        if "value" not in p:
            rows.append(settings + [status] + ["–"] * (len(SHOWN) + 2))
            continue
        rel = p["relative"]["cost_usd"]
        fitted = p["fitted_values"] or {}
        expected = "<br>".join(f"{esc(METRIC_LABELS[m])} {num(fitted[m], m)}" for m in ("sla_hit", "satisfaction") if m in fitted)
        if p.get("certificate"):
            expected += f"<br><span class='muted'>targets {esc(p['certificate']['status'])} on held-out folds</span>"
        rows.append(settings + [status] + [_cell(p["value"], m, flags.get((p["label"], m))) for m in SHOWN]
                    + [f"{rel['value']:+.1f} %<br><span class='muted'>[{rel['ci_low']:+.1f}, {rel['ci_high']:+.1f}]</span>", expected])
    return table(head, rows, left=len(keys) + 1)


def render_tune(result: TuneResult, summary: dict[str, Any]) -> str:
    """The whole sweep page."""
    ok = result.recommended is not None
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>llm-ope tune — {esc(summary['run_name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Budget and SLA sweep: {esc(summary['run_name'])}</h1>",
        f"<p class='muted'>Created {esc(summary['created'])} from {esc(summary['config_file'])}. Policy swept: "
        f"<b>{esc(result.tune.policy)}</b>; baseline <b>{esc(summary['baseline'])}</b>; estimator <b>{esc(result.estimator)}</b>; "
        f"{len(result.points)} settings; intervals at {result.level} per setting"
        f"{' (Bonferroni over every setting and target: all the checks hold jointly at 1 − α)' if result.tune.simultaneous else ''}.</p>",
        f"<div class='{'good' if ok else 'warn'}' style='font-size:16px;margin:12px 0'><b>{esc(result.verdict)}</b></div>",
        "<h2>Pareto frontier on the hold-out window</h2>",
        "<p class='muted'>Each point is one setting, judged on requests after the training window; bars are its intervals. "
        "The frontier joins settings no other beats on cost, SLA hit rate and satisfaction at once. Dashed lines: the rollout targets.</p>",
        pareto_plot(_plot_frame(result), summary["targets"]),
        "<h2>Every setting</h2>",
        "<p class='muted'>Hold-out estimates with intervals. 'Expected when fitted' is what the router expected on the training "
        "window from its outcome models when it was fitted: a gap to the hold-out estimate is model optimism or drift.</p>",
        _points_table(result, summary),
        "<h2>Notes</h2>", "".join(f"<div class='warn'>{esc(n)}</div>" for n in result.notes),
        "<h2>Reproducibility</h2>",
        table(["package", "version"], [[esc(k), esc(v)] for k, v in summary["versions"].items()]),
        f"<p>Data SHA-256: logs <code>{esc(summary['data']['sha256']['logs'])}</code>, catalog "
        f"<code>{esc(summary['data']['sha256']['catalog'])}</code></p>",
        f"<p>Config as used:</p><pre>{esc(to_toml(result.config))}</pre>",
        f"<p class='muted'>Timings (s): {esc(json.dumps(summary['timings_s']))}</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_tune_outputs(result: TuneResult, out_dir: Path, run_name: str, *, overwrite: bool = False) -> dict[str, Path]:
    """Write every output of a sweep into ``out_dir/run_name``; return their paths."""
    out = fresh_run_folder(out_dir, run_name, overwrite=overwrite)
    (out / "policies").mkdir()
    paths = {"report": out / "tune.html", "summary": out / "tune.json", "estimates": out / "tune.csv",
             "config": out / "config.toml", "policies": out / "policies"}
    result.frame().write_csv(paths["estimates"])
    summary = tune_summary(result, run_name)
    files = file_stems([p.label for p in result.points])
    for p in result.points:
        if p.policy is not None:
            (out / "policies" / f"{files[p.label]}.json").write_text(p.policy.to_json())  # type: ignore[attr-defined]
    summary["policy_files"] = {p.label: f"policies/{files[p.label]}.json" for p in result.points if p.policy is not None}
    paths["summary"].write_text(json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False))
    paths["config"].write_text(to_toml(result.config))
    paths["report"].write_text(render_tune(result, summary))
    return paths
