"""Write a run's results: report.html (self-contained), summary.json, estimates.csv, quantiles.csv, cdf.csv, actions/*.parquet."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import shutil
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from ope.config import to_toml
from ope.data.readers import log_files
from ope.data.schema import METRICS
from ope.errors import OPEError
from ope.evaluation.actions import file_stems
from ope.evaluation.distributions import quantile_headline
from ope.evaluation.headline import choose_headlines, chosen_estimators, headline_rows
from ope.evaluation.plan import interval_methods, primary_estimator
from ope.evaluation.run import RunResult
from ope.models.serialization import save_models
from ope.report.html import render

__all__ = ["data_hash", "fresh_run_folder", "json_safe", "summary", "versions", "write_outputs"]

PACKAGES = ("llm-ope", "numpy", "polars", "cvxpy", "scikit-learn", "lightgbm", "mlflow")


def data_hash(*paths: Path) -> str:
    """SHA-256 over the bytes of the input files, in order (a directory or glob: its files, `log_files` order)."""
    h = hashlib.sha256()
    for path in (f for p in paths for f in log_files(p)):
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Python and package versions, for reproducibility."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: summary.json stays valid JSON for every consumer."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summary(result: RunResult, run_name: str) -> dict[str, Any]:
    """The machine-readable summary of a run."""
    cfg = result.config
    est = result.estimates
    primary = primary_estimator(cfg.evaluation.estimators)
    choices = choose_headlines(est, cfg.evaluation.baseline, list(cfg.evaluation.estimators), cfg.evaluation.headline)
    chosen = chosen_estimators(choices)
    rows = headline_rows(est, chosen)
    headline: dict[str, Any] = {}
    for name in result.names:
        sub = rows.filter(pl.col("policy") == name)
        headline[name] = {
            kind: {r["metric"]: {k: r[k] for k in ("estimator", "value", "stderr", "ci_low", "ci_high")}
                   for r in sub.filter(pl.col("kind") == kind).iter_rows(named=True)}
            for kind in ("value", "difference", "relative")
        }
    return {
        "run_name": run_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_file": str(cfg.source),
        "baseline": cfg.evaluation.baseline,
        "primary_estimator": primary,
        "headline_estimators": chosen,
        "headline_by_metric": choices,
        "estimators": list(cfg.evaluation.estimators),
        "alpha": cfg.evaluation.alpha,
        "inference": cfg.evaluation.inference,
        "interval_methods": interval_methods(cfg),
        "sla_latency_ms": cfg.evaluation.sla_latency_ms,
        "metrics": list(METRICS),
        "relative_unit": "percent",
        "propensities": result.propensity_source,
        "propensity_diagnostics": None if result.propensity_model is None else result.propensity_model.diagnostics,
        "model_quality": None if result.outcome_models is None else result.outcome_models.quality,
        "data": {
            "logs": str(cfg.data.logs),
            "catalog": str(cfg.data.catalog),
            "sha256": {"logs": data_hash(cfg.data.logs), "catalog": data_hash(cfg.data.catalog)},
            **result.facts.to_dict(),
        } | ({} if result.streamed is None else {"streamed": result.streamed}),
        "policies": headline,
        "targets": [t.to_dict() for t in result.targets],
        "certification": {name: c.to_dict() for name, c in result.certificates.items()},
        "evaluated_as": result.evaluated_as,
        "diagnostics": result.diagnostics,
        "weight_shares": result.weight_shares,
        "warnings": result.warnings,
        "out_of_range": [f.to_dict() for f in result.out_of_range],
        "quantiles": quantile_summary(result),
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "versions": versions(),
    }


def quantile_summary(result: RunResult) -> dict[str, Any]:
    """summary.json's ``quantiles``: the headline estimator's p50 … p99 per policy and metric, value and paired difference
    vs the baseline, each with its interval (all estimators are in quantiles.csv)."""
    frame = result.quantiles
    est = quantile_headline(frame["estimator"].unique(maintain_order=True).to_list()) if frame.height else None
    out: dict[str, Any] = {"estimator": est, "policies": {}}
    for r in frame.filter(pl.col("estimator") == est).iter_rows(named=True):
        entry = out["policies"].setdefault(r["policy"], {}).setdefault(r["kind"], {}).setdefault(r["metric"], {})
        entry[f"p{round(100 * r['quantile']):d}"] = {k: r[k] for k in ("value", "ci_low", "ci_high")}
    return out


def fresh_run_folder(out_dir: Path, run_name: str, *, overwrite: bool) -> Path:
    """An empty ``out_dir/run_name``: an existing run is never mixed with a new one, only replaced when asked."""
    out = out_dir / run_name
    if out.exists():
        if not overwrite:
            raise OPEError(f"The run folder {out} already exists; choose another --run-name or pass --overwrite to replace it.")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def write_outputs(result: RunResult, out_dir: Path, run_name: str, *, overwrite: bool = False) -> dict[str, Path]:
    """Write every output of a run into ``out_dir/run_name``; return their paths."""
    out = fresh_run_folder(out_dir, run_name, overwrite=overwrite)
    paths = {"estimates": out / "estimates.csv", "summary": out / "summary.json", "report": out / "report.html"}
    result.estimates.write_csv(paths["estimates"])
    if result.quantiles.height:
        paths["quantiles"], paths["cdf"] = out / "quantiles.csv", out / "cdf.csv"
        result.quantiles.write_csv(paths["quantiles"])
        result.cdfs.write_csv(paths["cdf"])
    moved = result.actions.move_to(out / "actions")
    files = file_stems(result.names)
    info = summary(result, run_name)
    info["actions"] = {name: f"actions/{path.name}" for name, path in moved.items()}
    paths["summary"].write_text(json.dumps(json_safe(info), indent=2, default=str, allow_nan=False))
    (out / "config.toml").write_text(to_toml(result.config))
    paths["config"] = out / "config.toml"
    fitted = {name: p for name, p in result.policies.items() if p.learns}
    if fitted:
        (out / "policies").mkdir()
        for name, policy in fitted.items():
            (out / "policies" / f"{files[name]}.json").write_text(policy.to_json())
        paths["policies"] = out / "policies"
    if result.outcome_models is not None or result.propensity_model is not None:
        paths["models"] = save_models(out / "models", result.outcome_models, result.propensity_model)
    paths["report"].write_text(render(result, info))
    return paths
