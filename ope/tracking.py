"""Record a run in MLflow: flattened config as params, every estimate as metrics, outputs as artifacts."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import polars as pl

from ope.runner import RunResult

__all__ = ["TrackingError", "track_run", "metric_key", "ui_command"]

DEFAULT_URI = "sqlite:///mlflow.db"


class TrackingError(RuntimeError):
    """MLflow could not record the run (the local report is written regardless)."""


def metric_key(*parts: str) -> str:
    """MLflow-safe dotted key, e.g. ``cheapest.cost_usd.IPS.value``; other characters become '_'."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", p) for p in parts)


def _metrics(estimates: pl.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in estimates.iter_rows(named=True):
        base = [r["policy"], r["metric"], r["estimator"]]
        suffix = "" if r["kind"] == "value" else f"{r['kind']}_"
        for stat in ("value", "stderr", "ci_low", "ci_high"):
            v = r[stat]
            if v is not None and math.isfinite(v):
                out[metric_key(*base, suffix + stat)] = float(v)
    return out


def _model_metrics(info: dict[str, Any]) -> dict[str, float]:
    """Held-out quality of each outcome model and the propensity diagnostics, as metrics."""
    out = {metric_key("model", name, stat): float(v) for name, q in (info.get("model_quality") or {}).items() for stat, v in q.items()}
    out.update({metric_key("propensity", k): float(v) for k, v in (info.get("propensity_diagnostics") or {}).items()})
    return out


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go in ``mlruns/`` beside the database file, not in the working directory."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    return None


def ui_command(uri: str | None) -> str:
    """The command that opens the MLflow UI on this store (absolute, so it works from anywhere)."""
    uri = uri or DEFAULT_URI
    if uri.startswith("sqlite:///"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return f"mlflow ui --backend-store-uri {uri}"


def track_run(result: RunResult, paths: dict[str, Path], info: dict[str, Any], *, run_name: str) -> tuple[str, str]:
    """Log the run; return (run_id, tracking URI). Raises `TrackingError` on any MLflow failure."""
    cfg = result.config.tracking
    try:
        import mlflow

        if cfg.uri:
            mlflow.set_tracking_uri(cfg.uri)
        if mlflow.get_experiment_by_name(cfg.experiment) is None:
            mlflow.create_experiment(cfg.experiment, artifact_location=_artifact_location(mlflow.get_tracking_uri()))
        mlflow.set_experiment(cfg.experiment)
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params({metric_key(*k.split(".")): v[:6000] for k, v in result.config.flat().items()})
            mlflow.log_metrics(_metrics(result.estimates))
            mlflow.set_tags({
                "data_sha256_logs": info["data"]["sha256"]["logs"],
                "data_sha256_catalog": info["data"]["sha256"]["catalog"],
                "llm_ope_version": info["versions"].get("llm-ope", ""),
                "baseline": info["baseline"],
                "propensities": info["propensities"],
            })
            mlflow.log_metrics(_model_metrics(info))
            for path in paths.values():
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=path.name)
                else:
                    mlflow.log_artifact(str(path))
            actions = paths["report"].parent / "actions"
            if actions.exists():
                mlflow.log_artifacts(str(actions), artifact_path="actions")
            return run.info.run_id, mlflow.get_tracking_uri()
    except Exception as exc:  # any MLflow or store failure must not lose the local report
        raise TrackingError(f"MLflow tracking failed ({type(exc).__name__}: {exc}).") from exc
