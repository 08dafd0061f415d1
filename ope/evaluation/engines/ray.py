"""`ope run --engine ray`: the streamed run with its evaluation pass on a Ray cluster.

The driver runs pass 1 of `ope.evaluation.engines.local` (validation, facts, training sample) and fits the models
and policies as in a local streamed run. The evaluation pass then runs as Ray Data tasks:
``ray.data.read_parquet(files)`` → ``map_batches`` on Arrow batches: each task rebuilds the fitted
policies and models once per worker process (sent as JSON and LightGBM model strings, `ope.models.serialization`)
and calls `ope.evaluation.batch.evaluate_batch`; the driver merges the partial sums in log order and
writes the action files. A batch's history features need every row of the ``history_hours``
before it, so a task re-reads that window from the files (row-group statistics skip the rest);
window sums are exact (`ope.models.history`). Every number equals the single-machine run up to the
rounding of summing in other batch boundaries (checked to 1e-9); the driver and the workers need
the same polars version, whose hash of request_id gives the row keys (folds, bootstrap).

Ray is optional (``pip install "llm-ope[ray]"``); nothing else in llm-ope imports this module.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import uuid
import warnings
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from estimators import SupportWarning
from ope.data.dataset import BanditDataset
from ope.data.source import LogSource
from ope.data.validate import check_batch
from ope.errors import OPEError
from ope.evaluation.actions import ActionFiles, action_writers
from ope.evaluation.batch import BatchContext, BatchPartials, evaluate_log_batch
from ope.evaluation.engines.local import LocalEngine
from ope.evaluation.fit import Fitted, TrainingData
from ope.evaluation.plan import Plan
from ope.models.history import US_PER_HOUR, HistoryWindow, row_values
from ope.models.serialization import models_from_text, models_to_text
from ope.progress import progress
from policies import Policy
from policies.base import policy_from_json, policy_to_json

__all__ = ["RayEngine"]

#: object-store memory the run's batches may hold in flight: bounds the driver's memory, whatever the log's size
OBJECT_STORE_BYTES = 512 * 2**20
#: object store of a local cluster the run starts itself (Ray's default is 30 % of RAM); the driver maps
#: the pages it reads results from, so this bounds its resident memory too (with 1 GiB a DR run's driver reached 2.06 GB)
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20
INSTALL_HINT = 'Ray is not installed: pip install "llm-ope[ray]" (or pip install "ray[data]").'


class RayEngine(LocalEngine):
    """The local engine's survey and fit on the driver; its evaluation pass as Ray Data tasks (module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        super().__init__()
        self.address = address

    def check(self, plan: Plan, policies: dict[str, Policy]) -> None:
        """Ray is installed, the log's ts is a parquet timestamp, and the local engine's checks."""
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise OPEError(INSTALL_HINT) from exc
        super().check(plan, policies)
        _ts_type(LogSource.open(plan.config.data.logs))  # refuse early, before pass 1 and the fit

    def evaluate(self, ctx: BatchContext, fitted: Fitted, data: TrainingData, actions: ActionFiles, *,
                 show_progress: bool = True) -> BatchPartials:
        """The evaluation pass as Ray Data tasks; partial sums merged and action files written in log order."""
        import ray

        assert self.source is not None and self.found is not None
        source, found = self.source, self.found
        if found.repeated.len():
            raise OPEError(f"{source.label}: {found.repeated.len()} request_ids occur more than once (e.g. {found.repeated[0]!r}). "
                           "The Ray engine needs unique request_ids; quarantine and drop the repeats, or run without --engine ray.")
        started = not ray.is_initialized()
        if started:
            local = self.address is None and not os.environ.get("RAY_ADDRESS")  # a cluster of our own: keep its object store small
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     **({"object_store_memory": LOCAL_OBJECT_STORE_BYTES} if local else {}))
        try:
            return _run_tasks(source, ctx, found.facts.rows, actions, show_progress)
        finally:
            if started:
                ray.shutdown()


#: batch contexts already built in this worker process, by payload id (Ray reuses worker processes)
_CONTEXTS: dict[str, _Worker] = {}


class _Worker:
    """What a worker process holds for one run: the batch context, rebuilt from text once."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.files = payload["files"]
        policies = {name: policy_from_json(text) for name, text in payload["policies"].items()}
        models, propensity = models_from_text(payload["models"])
        if models is not None:  # one thread per task: Ray runs a task per CPU
            models.config = dataclasses.replace(models.config, predict_threads=1)
        cfg = payload["cfg"]
        plan = Plan.of(dataclasses.replace(cfg, predictors=dataclasses.replace(cfg.predictors, predict_threads=1)))
        self.ctx = BatchContext(plan, payload["catalog"], policies, models, payload["vocab"], payload["feedback"], propensity,
                               actions=payload["actions"], distributions=payload["distributions"])
        self.width = int(self.ctx.cfg.predictors.history_hours * US_PER_HOUR)
        self.ts_type = payload["ts_type"]

    def history(self, ds: BanditDataset) -> np.ndarray:
        """History block of the batch's rows from the valid rows of their window, re-read from the log.

        The window is validated (the rows pass 1 set aside must not count) but not built into a
        dataset: the history needs only each row's time, arm and `ope.models.history.row_values`.
        """
        ts = ds.logs["ts"].dt.epoch("us").to_numpy()
        start, stop = _instant(int(ts.min()) - self.width, self.ts_type), _instant(int(ts.max()), self.ts_type)
        raw = pl.scan_parquet(self.files).filter((pl.col("ts") >= start) & (pl.col("ts") < stop)).collect()
        context = check_batch(raw, self.ctx.catalog).logs if raw.height else None
        if context is None:
            context = raw.clear()
        earlier = context.filter(~pl.col("request_id").is_in(ds.logs["request_id"].implode()))  # the batch joins the window itself
        window = HistoryWindow(self.ctx.catalog.n_arms, self.ctx.cfg.predictors.history_hours)
        return window.preload(earlier["ts"].dt.epoch("us").to_numpy(), self.ctx.catalog.arm_index(earlier["arm"]), row_values(earlier))(ds)

    def __call__(self, table: pa.Table) -> dict[str, list[bytes]]:
        check = check_batch(pl.from_arrow(table), self.ctx.catalog)  # type: ignore[arg-type]
        if check.logs is None:  # pass 1 read the same rows without a fatal problem: the two readers disagree
            raise OPEError("A Ray task could not read its batch as pass 1 did: " + "; ".join(str(p) for p in check.problems))
        into = self.ctx.empty()
        actions: dict[str, pa.Table] = {}
        if check.logs.height:
            ds = self.ctx.dataset(check.logs)
            history = self.history(ds) if self.ctx.needs_history else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SupportWarning)
                actions = evaluate_log_batch(self.ctx, ds, history, into)
        return {"payload": [pickle.dumps((into, actions), protocol=pickle.HIGHEST_PROTOCOL)]}


def _batch_task(table: pa.Table, *, key: str, payload: list[Any]) -> dict[str, list[bytes]]:
    """The Ray Data function: evaluate one Arrow batch (``payload``: [object ref of the run's payload])."""
    if key not in _CONTEXTS:
        import ray

        _CONTEXTS.clear()
        _CONTEXTS[key] = _Worker(ray.get(payload[0]))
    return _CONTEXTS[key](table)


def _instant(us: int, dtype: pl.Datetime) -> pl.Expr:
    """The instant ``us`` µs after the epoch (UTC) as a literal of the log's ts type (so parquet statistics prune)."""
    value = pl.lit(us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    value = value.dt.convert_time_zone(dtype.time_zone) if dtype.time_zone else value.dt.replace_time_zone(None)
    return value.cast(dtype)


def _ts_type(source: LogSource) -> pl.Datetime:
    """The log's ts type; the Ray engine filters on it, so it must be a parquet timestamp."""
    ts_type = source.scan().collect_schema().get("ts")
    if not isinstance(ts_type, pl.Datetime):
        raise OPEError(f"{source.label}: the Ray engine needs 'ts' stored as a parquet timestamp; it is {ts_type}. "
                       "Rewrite the files once with ts parsed, or run without --engine ray.")
    return ts_type


def _payload(source: LogSource, ctx: BatchContext) -> dict[str, Any]:
    return {"ts_type": _ts_type(source), "files": [str(f.resolve()) for f in source.files], "cfg": ctx.cfg, "catalog": ctx.catalog, "vocab": ctx.vocab,
            "feedback": ctx.feedback, "actions": ctx.actions, "policies": {name: policy_to_json(p) for name, p in ctx.policies.items()},
            "models": models_to_text(ctx.models, ctx.propensity), "distributions": ctx.distributions}


def _run_tasks(source: LogSource, ctx: BatchContext, rows: int, actions: ActionFiles, show_progress: bool) -> BatchPartials:
    import ray

    data_context = ray.data.DataContext.get_current()
    data_context.execution_options.preserve_order = True
    data_context.enable_progress_bars = False
    limits = data_context.execution_options.resource_limits
    data_context.execution_options.resource_limits = limits.copy(object_store_memory=OBJECT_STORE_BYTES)
    key = uuid.uuid4().hex
    dataset = ray.data.read_parquet([str(f.resolve()) for f in source.files], partitioning=None).map_batches(
        _batch_task, fn_kwargs={"key": key, "payload": [ray.put(_payload(source, ctx))]}, batch_size=ctx.cfg.data.batch_rows,
        batch_format="pyarrow")
    total = ctx.empty()
    with action_writers(actions.paths) as writers, \
            progress("evaluating batches on Ray", total=math.ceil(source.n_rows / ctx.cfg.data.batch_rows), enabled=show_progress) as bar:
        for row in dataset.iter_rows():
            part, tables = pickle.loads(row["payload"])  # our own tasks wrote it
            total.merge(part)
            for name, table in tables.items():
                writers[name].write_table(table)
            bar.update(1)
    if total.rows != rows:
        raise OPEError(f"The Ray tasks evaluated {total.rows:,} rows but pass 1 found {rows:,} valid rows in {source.label}.")
    return total
