"""Record a run in MLflow: flattened config as params, every estimate as metrics, outputs as artifacts."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ope.config import TrackingConfig
from ope.evaluation.run import RunResult

if TYPE_CHECKING:
    from ope.evaluation.tune import TuneResult

__all__ = ["TrackingError", "metric_key", "track_run", "track_tune", "ui_command"]

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


def _mlflow(cfg: TrackingConfig) -> Any:
    """The mlflow module, pointed at the configured store and experiment (created with artifacts beside a SQLite DB)."""
    import mlflow

    if cfg.uri:
        mlflow.set_tracking_uri(cfg.uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        mlflow.create_experiment(cfg.experiment, artifact_location=_artifact_location(mlflow.get_tracking_uri()))
    mlflow.set_experiment(cfg.experiment)
    return mlflow


def track_run(result: RunResult, paths: dict[str, Path], info: dict[str, Any], *, run_name: str) -> tuple[str, str]:
    """Log the run; return (run_id, tracking URI). Raises `TrackingError` on any MLflow failure."""
    try:
        mlflow = _mlflow(result.config.tracking)
        with mlflow.start_run(run_name=run_name) as run:
            mlflow.log_params({metric_key(*k.split(".")): v[:6000] for k, v in result.config.flat().items()})
            mlflow.log_metrics(_metrics(result.estimates))
            mlflow.set_tags({
                "data_sha256_logs": info["data"]["sha256"]["logs"],
                "data_sha256_catalog": info["data"]["sha256"]["catalog"],
                "llm_ope_version": info["versions"].get("llm-ope", ""),
                "baseline": info["baseline"],
                "propensities": info["propensities"],
                "targets_missed": str(sum(t["verdict"] == "fails" for t in info["targets"])),
                **{f"target.{metric_key(t['policy'], t['key'])}": t["verdict"] for t in info["targets"]},
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


def track_tune(result: TuneResult, paths: dict[str, Path], summary: dict[str, Any], *, run_name: str) -> tuple[str, str]:
    """Log a sweep: one parent run (config, verdict, outputs) and a nested run per setting; return (parent id, URI)."""
    try:
        mlflow = _mlflow(result.config.tracking)
        with mlflow.start_run(run_name=run_name) as parent:
            mlflow.log_params({metric_key(*k.split(".")): v[:6000] for k, v in result.config.flat().items()})
            mlflow.set_tags({"kind": "tune", "data_sha256_logs": summary["data"]["sha256"]["logs"],
                             "llm_ope_version": summary["versions"].get("llm-ope", ""), "verdict": summary["verdict"][:5000],
                             "recommended": summary["recommended"] or "none"})
            mlflow.log_metrics(_metrics(result.baseline))
            for path in paths.values():
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=path.name)
                else:
                    mlflow.log_artifact(str(path))
            for i, point in enumerate(result.points):
                with mlflow.start_run(run_name=point.label, nested=True):
                    mlflow.log_params({metric_key("setting", k): v for k, v in point.settings.items()})
                    mlflow.set_tags({"status": point.status, "recommended": str(i == result.recommended).lower(),
                                     "reasons": "; ".join(point.reasons)[:5000]})
                    if point.estimates is not None:
                        mlflow.log_metrics(_metrics(point.estimates.with_columns(pl.lit(result.tune.policy).alias("policy"))))
            return parent.info.run_id, mlflow.get_tracking_uri()
    except Exception as exc:  # any MLflow or store failure must not lose the local outputs
        raise TrackingError(f"MLflow tracking failed ({type(exc).__name__}: {exc}).") from exc
