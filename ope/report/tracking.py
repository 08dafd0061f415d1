"""Record a run in MLflow: a short headline metric set, the config as params, the inputs, outputs as artifacts.

MLflow shows metrics sorted by name, so the headline keys are ``<policy>/<metric>`` (the headline
estimator's value) and ``<policy>/<metric>.change_pct`` (its paired relative change vs the
baseline): one section per policy, a metric next to its change. The full table of every estimator,
kind and interval is the ``estimates.csv`` artifact.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import polars as pl

from ope.config import TrackingConfig
from ope.errors import OPEError
from ope.evaluation.headline import headline_rows
from ope.evaluation.run import RunResult

if TYPE_CHECKING:
    from ope.evaluation.tune import TuneResult

__all__ = ["RECORD", "REGISTRY_SCHEMES", "TrackingError", "check_registry", "check_server", "headline_metrics", "metric_key",
           "run_description", "run_page", "track_export", "track_run", "track_tune", "ui_command"]

DEFAULT_URI = "sqlite:///mlflow.db"
#: the run folder's note of where MLflow keeps the run, written once it is recorded; `ope export` logs there
RECORD = "mlflow.json"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}   # MLflow 3's "Machine learning" view
# MLflow retries an unreachable server 7 times with exponential backoff (minutes); a report tool should not wait that
# long. Used only where the user has not set them.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
SHOWN = ("cost_usd", "success", "satisfaction", "sla_hit", "latency_ms", "throughput_tps")


class TrackingError(RuntimeError):
    """MLflow could not record the run (the local report is written regardless)."""


def metric_key(*parts: str) -> str:
    """MLflow-safe dotted key, e.g. ``cheapest.cost_usd.IPS.value``; other characters become '_'."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", p) for p in parts)


def check_server(uri: str | None, *, timeout: float = 3.0) -> str | None:
    """Why an HTTP tracking server does not answer within ``timeout`` seconds, or None if it answers.

    Any HTTP answer counts (a 401 or 404 too: the server is there). Other stores (a SQLite file, a
    folder, ``databricks``) are not checked here: they fail fast by themselves.
    """
    if urlsplit(uri or "").scheme not in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(uri, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the MLflow server {uri} does not answer ({reason}; checked with a {timeout:g} s timeout)"


#: tracking stores that hold a model registry (a file store does not, in MLflow 3)
REGISTRY_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc")


def check_registry(uri: str | None) -> None:
    """Refuse, before a run, to register a model in a store without a model registry (a local folder / file store)."""
    scheme = urlsplit(uri or DEFAULT_URI).scheme
    if scheme not in REGISTRY_SCHEMES:
        raise OPEError(f"--register needs a tracking store with a model registry (sqlite:///..., a database or an MLflow server); "
                       f"the tracking URI {uri!r} is a file store. Pass e.g. --tracking-uri sqlite:///mlflow.db.")


def headline_metrics(estimates: pl.DataFrame, estimator: str | dict[str, str], *, bounds: bool = False) -> dict[str, float]:
    """``<policy>/<metric>`` (value) and ``<policy>/<metric>.change_pct`` (relative change) of one estimator, or of
    each metric's own (``estimator`` a mapping metric → name, a run's ``headline_estimators``).

    With ``bounds``, each also gets ``.ci_low`` and ``.ci_high`` (a sweep decides on them).
    """
    kinds = estimates.filter(pl.col("kind").is_in(["value", "relative"]))
    rows = kinds.filter(pl.col("estimator") == estimator) if isinstance(estimator, str) else headline_rows(kinds, estimator)
    stats = ("value", "ci_low", "ci_high") if bounds else ("value",)
    out: dict[str, float] = {}
    for r in rows.iter_rows(named=True):
        key = re.sub(r"[^A-Za-z0-9_\-. ]", "_", r["policy"]) + "/" + r["metric"] + ("" if r["kind"] == "value" else ".change_pct")
        for stat in stats:
            v = r[stat]
            if v is not None and math.isfinite(v):
                out[key + ("" if stat == "value" else f".{stat}")] = float(v)
    return out


def run_description(info: dict[str, Any]) -> str:
    """The run in one line: each policy's significant changes vs the baseline under the headline estimator."""
    parts = []
    for name, kinds in info["policies"].items():
        if name == info["baseline"]:
            continue
        changes = [f"{m} {c['value']:+.1f}%" for m, c in kinds["relative"].items()
                   if m in SHOWN and c["value"] is not None and c["ci_low"] is not None and math.isfinite(c["value"])
                   and not c["ci_low"] <= 0 <= c["ci_high"]]
        parts.append(f"{name}: {', '.join(changes) if changes else 'no significant change'}")
    chosen = set(info.get("headline_estimators", {}).values()) or {info["primary_estimator"]}
    by = chosen.pop() if len(chosen) == 1 else "headline estimators per metric"
    return f"{by} vs {info['baseline']} — " + "; ".join(parts)


def _model_metrics(info: dict[str, Any]) -> dict[str, float]:
    """Held-out quality of each outcome model and the propensity diagnostics, as metrics."""
    out = {metric_key("model", name, stat): float(v) for name, q in (info.get("model_quality") or {}).items()
           for stat, v in q.items() if isinstance(v, (int, float))}
    out.update({metric_key("propensity", k): float(v) for k, v in (info.get("propensity_diagnostics") or {}).items()
                if isinstance(v, (int, float))})
    return out


def _sqlite_file(uri: str) -> Path | None:
    """The absolute path of a SQLite store's database file; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")).resolve() if uri.startswith("sqlite:///") else None


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go in ``mlruns/`` beside the database file, not in the working directory."""
    db = _sqlite_file(uri)
    return None if db is None else (db.parent / "mlruns").as_uri()


def _absolute(uri: str) -> str:
    """A SQLite store's URI with its file's absolute path, so it names the same store from any directory."""
    db = _sqlite_file(uri)
    return uri if db is None else f"sqlite:///{db}"


def ui_command(uri: str | None) -> str:
    """The command that opens the MLflow UI on this store (absolute, so it works from anywhere)."""
    return f"mlflow ui --backend-store-uri {_absolute(uri or DEFAULT_URI)}"


def _served(uri: str | None) -> bool:
    """A tracking server's URI (its UI is at the same address), not a local store."""
    return bool(uri) and urlsplit(uri).scheme in ("http", "https")


def how_to_open(uri: str, page: str) -> str:
    """How a person opens a run's page: on a server, the page; on a local store, the command that serves it, then the page."""
    return page if _served(uri) else f"{ui_command(uri)}, then {page}"


def run_page(uri: str | None, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI, in the "Machine learning" view.

    MLflow 3's UI opens in its GenAI view unless the page is asked for with ``workflowType=machine_learning``
    (the choice is then remembered); a local store is served by ``mlflow ui`` on http://127.0.0.1:5000.
    """
    base = uri.rstrip("/") if uri and _served(uri) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def _http_limits() -> None:
    for key, value in HTTP_ENV.items():
        os.environ.setdefault(key, value)


def _mlflow(cfg: TrackingConfig) -> tuple[Any, str]:
    """The mlflow module, pointed at the configured store, and the experiment id (created in the classic ML view)."""
    _http_limits()
    import mlflow

    if cfg.uri:
        mlflow.set_tracking_uri(cfg.uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        exp_id = mlflow.create_experiment(cfg.experiment, artifact_location=_artifact_location(mlflow.get_tracking_uri()),
                                          tags=EXPERIMENT_KIND)
    else:
        exp_id = experiment.experiment_id
        if "mlflow.experimentKind" not in experiment.tags:
            mlflow.MlflowClient().set_experiment_tag(exp_id, *next(iter(EXPERIMENT_KIND.items())))
    mlflow.set_experiment(experiment_id=exp_id)
    return mlflow, exp_id


def _start(mlflow: Any, exp_id: str, run_name: str, started: float | None) -> Any:
    """An active run whose start time is when the command started, so its duration covers the whole run."""
    start_ms = int(1000 * (started if started is not None else time.time()))
    run = mlflow.MlflowClient().create_run(exp_id, start_time=start_ms, run_name=run_name)
    return mlflow.start_run(run_id=run.info.run_id)


def _log_inputs(mlflow: Any, info: dict[str, Any]) -> None:
    """The log and the catalog as MLflow dataset inputs, with their SHA-256 as digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for role in ("logs", "catalog"):
        path = Path(info["data"][role])
        with warnings.catch_warnings():   # MLflow registers local files twice and says so; either reading is right
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(path.resolve()))
        digest = info["data"]["sha256"][role][:32]   # MLflow keeps at most 36 characters
        mlflow.log_input(MetaDataset(source, name=path.name, digest=digest), context=role)


def _log_outputs(mlflow: Any, paths: dict[str, Path]) -> None:
    for path in paths.values():
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        else:
            mlflow.log_artifact(str(path))


def track_run(result: RunResult, paths: dict[str, Path], info: dict[str, Any], *, run_name: str,
              started: float | None = None, register: tuple[str, str] | None = None,
              messages: list[str] | None = None) -> tuple[str, str, str]:
    """Log the run (started at ``started``, a `time.time()`); return (run_id, tracking URI, `run_page`).

    Every policy whose rule reads the outcome models is logged as a pyfunc model (`ope.report.pyfunc`);
    ``register`` (model name, policy) also logs that policy and registers it, saying so in ``messages``.
    Raises `TrackingError` on any MLflow failure."""
    try:
        mlflow, exp_id = _mlflow(result.config.tracking)
        with _start(mlflow, exp_id, run_name, started) as run:
            mlflow.set_tags({
                "mlflow.note.content": run_description(info),
                "data_sha256_logs": info["data"]["sha256"]["logs"],
                "data_sha256_catalog": info["data"]["sha256"]["catalog"],
                "llm_ope_version": info["versions"].get("llm-ope", ""),
                "baseline": info["baseline"],
                "headline_estimator": ", ".join(f"{m}={e}" for m, e in info["headline_estimators"].items()),
                "propensities": info["propensities"],
                "targets_missed": str(sum(t["verdict"] == "fails" for t in info["targets"])),
                **{f"target.{metric_key(t['policy'], t['key'])}": t["verdict"] for t in info["targets"]},
            })
            mlflow.log_params({metric_key(*k.split(".")): v[:6000] for k, v in result.config.flat().items()})
            mlflow.log_metrics(headline_metrics(result.estimates, info["headline_estimators"]) | _model_metrics(info))
            _log_inputs(mlflow, info)
            _log_outputs(mlflow, paths)
            actions = paths["report"].parent / "actions"
            if actions.exists():
                mlflow.log_artifacts(str(actions), artifact_path="actions")
            _log_routers(result, register, messages if messages is not None else [])
            run_id = run.info.run_id
        uri = mlflow.get_tracking_uri()
    except Exception as exc:  # any MLflow or store failure must not lose the local report
        raise TrackingError(f"MLflow could not record the run ({type(exc).__name__}: {exc})") from exc
    page = run_page(uri, exp_id, run_id)
    record = {"tracking_uri": _absolute(uri), "experiment_id": exp_id, "run_id": run_id, "page": page}
    try:
        (paths["report"].parent / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise TrackingError(f"the run is recorded in MLflow as {run_id}, but {RECORD} could not be written ({exc})") from exc
    return run_id, uri, page


def _record(run_dir: Path) -> dict[str, str] | None:
    """The run folder's tracking record, None if it has none; a record that cannot be read is a `TrackingError`."""
    path = run_dir / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrackingError(f"{path} is not a tracking record ({exc})") from exc
    missing = [k for k in ("tracking_uri", "run_id", "page") if not isinstance(record, dict) or not isinstance(record.get(k), str)]
    if missing:
        raise TrackingError(f"{path} is not a tracking record: it lacks {', '.join(missing)}")
    uri = record["tracking_uri"]
    db = _sqlite_file(uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"the run's MLflow store {uri} (from {path}) no longer exists")
    return record


def track_export(run_dir: Path, paths: dict[str, Path], name: str) -> dict[str, str] | None:
    """Log an export of a tracked run into that run: the comparison's outputs as artifacts under ``exports/<name>/``,
    the gateway file under ``exports/<name>/gateway/``, and a tag ``export.<name>`` naming the gateway file.

    Returns the run's record (`RECORD`), or None when the run was not tracked. Raises `TrackingError` when the record
    cannot be read or MLflow cannot take the export (the files stay written)."""
    record = _record(run_dir)
    if record is None:
        return None
    problem = check_server(record["tracking_uri"])
    if problem is not None:
        raise TrackingError(problem)
    _http_limits()
    try:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=record["tracking_uri"])
        where = f"exports/{name}"
        client.log_artifacts(record["run_id"], str(paths["report"].parent), artifact_path=where)
        client.log_artifact(record["run_id"], str(paths["gateway"]), artifact_path=f"{where}/gateway")
        client.set_tag(record["run_id"], f"export.{name}", paths["gateway"].name)
    except Exception as exc:
        raise TrackingError(f"MLflow could not record the export in run {record['run_id']} ({type(exc).__name__}: {exc})") from exc
    return record


def _log_routers(result: RunResult, register: tuple[str, str] | None, messages: list[str]) -> None:
    """The run's routers as pyfunc models in the active run; the one to register, registered."""
    from ope.report.pyfunc import log_router, routers_to_log

    for policy in routers_to_log(result, None if register is None else register[1]):
        name = register[0] if register is not None and register[1] == policy else None
        info = log_router(result, policy, registered_name=name)
        messages.append(f"model:     {info.model_uri} (policy '{policy}': mlflow.pyfunc.load_model(uri).predict(requests))")
        if name is not None:
            messages.append(f"registered: models:/{name}/{info.registered_model_version} (policy '{policy}')")


def track_tune(result: TuneResult, paths: dict[str, Path], summary: dict[str, Any], *, run_name: str,
               started: float | None = None) -> tuple[str, str, str]:
    """Log a sweep: one parent run (config, verdict, outputs) and a nested run per setting; return (parent id, URI,
    `run_page`)."""
    try:
        mlflow, exp_id = _mlflow(result.config.tracking)
        with _start(mlflow, exp_id, run_name, started) as parent:
            mlflow.set_tags({"kind": "tune", "mlflow.note.content": summary["verdict"][:5000],
                             "data_sha256_logs": summary["data"]["sha256"]["logs"],
                             "llm_ope_version": summary["versions"].get("llm-ope", ""), "verdict": summary["verdict"][:5000],
                             "recommended": summary["recommended"] or "none"})
            mlflow.log_params({metric_key(*k.split(".")): v[:6000] for k, v in result.config.flat().items()})
            mlflow.log_metrics(headline_metrics(result.baseline.with_columns(pl.lit("baseline").alias("policy")),
                                                result.estimator, bounds=True))
            _log_inputs(mlflow, summary)
            _log_outputs(mlflow, paths)
            for i, point in enumerate(result.points):
                with mlflow.start_run(run_name=point.label, nested=True):
                    mlflow.log_params({metric_key("setting", k): v for k, v in point.settings.items()})
                    mlflow.set_tags({"status": point.status, "recommended": str(i == result.recommended).lower(),
                                     "reasons": "; ".join(point.reasons)[:5000]})
                    if point.estimates is not None:
                        est = point.estimates.with_columns(pl.lit(result.tune.policy).alias("policy"))
                        mlflow.log_metrics(headline_metrics(est, result.estimator, bounds=True))
            return parent.info.run_id, mlflow.get_tracking_uri(), run_page(mlflow.get_tracking_uri(), exp_id,
                                                                           parent.info.run_id)
    except Exception as exc:  # any MLflow or store failure must not lose the local outputs
        raise TrackingError(f"MLflow could not record the sweep ({type(exc).__name__}: {exc})") from exc
