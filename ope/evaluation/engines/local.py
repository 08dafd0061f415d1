"""`ope run --streaming`: the same run as `ope.evaluation.run.run_experiment`, in bounded memory, batch by batch.

Two passes over a parquet log (a file, a directory or a glob), each one batch of ``[data]
batch_rows`` rows at a time (`ope.data.source`):

1. **Survey**: validate every batch (`ope.data.batch_checks`: the same error table and quarantine
   file as on the whole log), collect the facts the report shows, the log-wide vocabulary of
   categorical columns, and a uniform training sample of at most ``[data] max_train_rows`` rows
   with their history features (`ope.models.sample`).
2. Fit the outcome models and, for rows without a logged propensity, the propensity model
   (cross-fitted, folds from the row key) and the policies on the sample.
3. **Evaluate**: validate each batch again and run `ope.evaluation.batch.evaluate_batch` on it
   (features, q̂, estimated propensities, action probabilities, partial sums of every estimator and
   of the per-period / per-group / per-provider tables); append the action files; finalize once.
   ``evaluate`` swaps this pass for another engine's (`ope.evaluation.engines.ray`).

Memory holds one batch, the training sample, the last history window and the partial sums,
whatever the number of rows. The log must be in time order when outcome or propensity models are
needed (their history features look back ``history_hours`` across batch boundaries); a log out of
order is refused with the first offending row. Online routers (mess_plus, stage_route) are sequential by
nature and are refused too.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from estimators import EstimatorInputError, SupportWarning
from ope.evaluation.io_threads import prefetched, writes
from ope.evaluation.breakdown import missing_row
from ope.data.catalog import Catalog, load_catalog
from ope.config import ExperimentConfig
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError, OPEError, SchemaError
from ope.data.overlap import RoutingCounts
from ope.progress import progress
from ope.models.propensity import fit_propensities
from ope.data.readers import PARQUET_SUFFIXES, is_multi_file, log_files
from ope.evaluation.registry import build_policy
from ope.evaluation.run import (
    ESTIMATE_COLUMNS,
    RunResult,
    blank_metric,
    build_estimators,
    build_inference,
    estimated_note,
    model_based_only,
)
from ope.data.schema import METRICS
from ope.evaluation.batch import BatchContext, BatchPartials, action_writers, batch_dataset, evaluate_batch
from ope.models.sample import HistoryWindow, TrainingSample, Vocabulary, batch_features, fit_on_sample
from ope.data.source import LogSource
from ope.data.batch_checks import ProblemTally, QuarantineWriter, checked_batches
from ope.data.validate import check_quarantine, raise_for_problems
from policies import Policy

__all__ = ["StreamInfo", "estimated_memory_mb", "run_streaming", "streaming_wanted"]



@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a streamed run read: the report's data facts, how it was batched, and its action files.

    In a streamed `RunResult`, ``dataset`` is the training sample and ``probabilities`` hold no rows:
    the action probabilities of every logged request are in ``actions`` (one parquet file per
    policy, moved into the run folder by `ope.report.outputs.write_outputs`).
    """

    files: tuple[Path, ...]
    rows: int
    quarantined: int
    rows_with_satisfaction: int
    start: datetime
    end: datetime
    models: list[dict[str, Any]]
    batches: int
    batch_rows: int
    train_rows: int
    actions: dict[str, Path] = field(default_factory=dict)
    engine: str = "local"

    def move_actions(self, targets: dict[str, Path]) -> None:
        """Move each policy's action file to ``targets[policy]`` and remove the temporary folder."""
        for name, path in self.actions.items():
            shutil.move(path, targets[name])
        for folder in {path.parent for path in self.actions.values()}:
            shutil.rmtree(folder, ignore_errors=True)

    def data_facts(self) -> dict[str, Any]:
        """The ``data`` facts of summary.json that depend on every row."""
        return {"rows": self.rows, "quarantined_rows": self.quarantined, "rows_with_satisfaction": self.rows_with_satisfaction,
                "start": self.start.isoformat(), "end": self.end.isoformat(), "models": self.models,
                "streamed": {"engine": self.engine, "files": len(self.files), "batches": self.batches,
                             "batch_rows": self.batch_rows, "train_rows": self.train_rows}}


def estimated_memory_mb(n_rows: int, n_arms: int, n_policies: int) -> float:
    """Rough peak of an in-memory run: q̂ (n × K × M), the history features (n × K × 3), eligibility and
    prices (≈ 2 n × K) and one probability matrix per policy (n × K), in float64."""
    return n_rows * n_arms * 8 * (len(METRICS) + 3 + 2 + n_policies) / 1e6


def streaming_wanted(cfg: ExperimentConfig) -> bool:
    """``[data] streaming``, or a parquet log whose in-memory run would exceed ``[data] memory_budget_mb``."""
    if cfg.data.streaming:
        return True
    logs = cfg.data.logs
    if not is_multi_file(logs) and Path(logs).suffix.lower() not in PARQUET_SUFFIXES:
        return False
    files = log_files(logs)
    n_rows = int(pl.scan_parquet(files).select(pl.len()).collect().item())
    n_arms = load_catalog(cfg.data.catalog).n_arms
    return estimated_memory_mb(n_rows, n_arms, len(cfg.policies)) > cfg.data.memory_budget_mb


def _check_settings(cfg: ExperimentConfig, policies: dict[str, Policy]) -> None:
    data = cfg.data
    for key in ("batch_rows", "max_train_rows"):
        if getattr(data, key) < 1:
            raise ConfigError(f"{cfg.source}: [data] {key} must be an int >= 1. Got {getattr(data, key)}.")
    if cfg.predictors.time_blocked:
        raise ConfigError(f"{cfg.source}: [predictors] time_blocked folds need the whole log; streaming assigns folds from the row key.")
    online = [name for name, p in policies.items() if getattr(p, "online", None) is not None]
    if online:
        msg = (f"Policies {online} learn online in arrival order (mess_plus, stage_route) and cannot be evaluated in streaming "
               "mode yet; run them on a log that fits in memory (without --streaming, raising [data] memory_budget_mb).")
        raise ConfigError(msg)


@dataclass
class _Survey:
    """Pass 1's findings."""

    repeated: pl.Series
    vocab: Vocabulary
    sample: TrainingSample
    rows: int = 0
    quarantined: int = 0
    with_satisfaction: int = 0
    feedback: bool = False
    missing_propensity: int = 0
    start: datetime | None = None
    end: datetime | None = None
    models: dict[str, int] = field(default_factory=dict)
    out_of_order: str | None = None
    batches: int = 0
    routing: RoutingCounts | None = None


def _survey(source: LogSource, catalog: Catalog, cfg: ExperimentConfig, needs_history: bool, show_progress: bool, *,
            count_routing: bool = False) -> _Survey:
    """Pass 1: validation (raising or quarantining as in memory), facts, vocabulary, training sample
    (with its history features when outcome or propensity models will be fitted on it), and with
    ``count_routing`` the routing counts that tell a deterministic logger (`ope.data.overlap`)."""
    data = cfg.data
    found = _Survey(source.repeated_ids(), Vocabulary(), TrainingSample(data.max_train_rows),
                    routing=RoutingCounts() if count_routing else None)
    tally = ProblemTally()
    writer = None if data.quarantine is None else QuarantineWriter(Path(data.quarantine))
    window = HistoryWindow(catalog.n_arms, cfg.predictors.history_hours) if needs_history else None
    last = None
    total = math.ceil(source.n_rows / data.batch_rows)
    with progress("validating and sampling logs", total=total, enabled=show_progress) as bar:
        for check in prefetched(checked_batches(source, catalog, data.batch_rows, found.repeated)):
            bar.update(1)
            found.batches += 1
            tally.add(check)
            if tally.has_fatal or check.logs is None or check.bad_rows is None:
                continue
            if writer is not None:
                writer.write(check.bad_rows)
            found.quarantined += check.bad_rows.height
            if check.logs.height == 0:
                continue
            ds = batch_dataset(check.logs, catalog, cfg.evaluation.sla_latency_ms)
            ts = ds.logs["ts"].dt.epoch("us").to_numpy()
            earlier = np.concatenate([[ts[0] if last is None else last], ts[:-1]])
            if found.out_of_order is None and (ts < earlier).any():
                row = int(np.flatnonzero(ts < earlier)[0])
                found.out_of_order = (f"request_id {ds.logs['request_id'][row]} at {ds.logs['ts'][row]} comes after a request "
                                      f"{(earlier[row] - ts[row]) / 1e6:g} s later")
            last = ts[-1]
            found.vocab.add(ds.logs)
            history = window(ds) if window is not None and found.out_of_order is None else None
            found.sample.offer(ds, found.rows, history)
            if found.routing is not None:
                found.routing.add(ds.logs, ds.eligible)
            _facts(found, ds)
    if writer is not None:
        writer.close()
    raise_for_problems(source.label, tally.problems(), tally.n_input, data.quarantine)
    if found.rows == 0:
        raise SchemaError(f"{source.label}: no valid rows are left after setting aside {found.quarantined} bad rows.")
    return found


def _facts(found: _Survey, ds: BanditDataset) -> None:
    found.rows += ds.n
    found.with_satisfaction += int((~np.isnan(ds.outcomes[:, METRICS.index("satisfaction")])).sum())
    found.feedback = found.feedback or ds.has_satisfaction_feedback()
    found.missing_propensity += int(np.isnan(ds.propensities).sum())
    lo, hi = ds.logs["ts"].min(), ds.logs["ts"].max()
    found.start = lo if found.start is None else min(found.start, lo)  # type: ignore[type-var,assignment]
    found.end = hi if found.end is None else max(found.end, hi)  # type: ignore[type-var,assignment]
    for model, count in ds.logs["model"].value_counts().iter_rows():
        found.models[model] = found.models.get(model, 0) + count


def _evaluate(source: LogSource, ctx: BatchContext, found: _Survey, actions: dict[str, Path], show_progress: bool) -> BatchPartials:
    """Pass 3: `ope.evaluation.batch.evaluate_batch` on every batch, action files written as it goes.

    BLAS runs on one thread: its products here are small and memory-bound, and on a machine whose
    cores are busy, OpenBLAS's spinning threads made a 10⁶-row run 5× slower (115 s against 21 s).
    """
    window = HistoryWindow(ctx.catalog.n_arms, ctx.cfg.predictors.history_hours) if ctx.needs_history else None
    total = ctx.empty()
    checked = checked_batches(source, ctx.catalog, ctx.cfg.data.batch_rows, found.repeated)
    datasets = (ctx.dataset(check.logs) for check in checked if check.logs is not None and check.logs.height)
    # writes() inside action_writers(): its pending writes finish before the writers close, however the pass ends
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"), action_writers(actions) as writers, writes() as background, \
            progress("evaluating rows", total=found.rows, enabled=show_progress) as bar:
        warnings.simplefilter("ignore", SupportWarning)
        for ds in prefetched(datasets):  # the next batch is read, checked and built while this one is summed
            background.submit(evaluate_batch(ctx, ds, None if window is None else window(ds), total), writers)
            bar.update(ds.n)
    return total


def _estimate_rows(cfg: ExperimentConfig, run: BatchPartials, names: list[str], notes: list[str]) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """Finalize every policy × estimator × kind, as `run_experiment` does."""
    estimators, inference = build_estimators(cfg), build_inference(cfg)
    alpha, rows, diagnostics = cfg.evaluation.alpha, [], {}
    from ope.evaluation.breakdown import estimate_rows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for name in names:
            kinds = ("value", "difference", "relative") if name != cfg.evaluation.baseline else ("value",)
            for est in estimators:
                try:
                    if (name, est.name) in run.failed:
                        raise EstimatorInputError(run.failed[(name, est.name)])
                    part = run.parts[(name, est.name)]
                    value = est.finalize(part, inference=inference, alpha=alpha, kind="value")
                    done = {k: value if k == "value" else est.finalize(part, inference=inference, alpha=alpha, kind=k) for k in kinds}
                except EstimatorInputError as exc:
                    notes.append(f"{name}: {est.name} cannot estimate it on this log ({exc}).")
                    rows += [missing_row(name, m, est.name, k) for k in kinds for m in METRICS]
                    continue
                diagnostics.setdefault(name, {})[est.name] = value.diagnostics.to_dict()
                rows += [r for k, e in done.items() for r in estimate_rows(name, e, k)]
    schema = {c: (pl.String if c in ("policy", "metric", "estimator", "kind") else pl.Float64) for c in ESTIMATE_COLUMNS}
    return pl.DataFrame(rows, schema=schema), diagnostics


#: the evaluation pass of an engine: (source, context, survey, action files, progress) → merged partial sums
Evaluate = Callable[[LogSource, BatchContext, "_Survey", dict[str, Path], bool], BatchPartials]


def run_streaming(cfg: ExperimentConfig, *, show_progress: bool = True, evaluate: Evaluate | None = None) -> RunResult:
    """The run of `ope.evaluation.run.run_experiment` on a log read in batches (module docstring).

    ``evaluate`` replaces the local evaluation pass (`ope.evaluation.engines.ray` runs it on a Ray cluster).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    estimators = build_estimators(cfg)
    build_inference(cfg)
    policies = {p.name: build_policy(p) for p in cfg.policies}
    if cfg.evaluation.baseline not in policies:
        raise ConfigError(f"{cfg.source}: baseline '{cfg.evaluation.baseline}' is not among the policies {list(policies)}.")
    _check_settings(cfg, policies)
    catalog = load_catalog(cfg.data.catalog)
    source = LogSource.open(cfg.data.logs)
    if cfg.data.quarantine is not None:
        check_quarantine(Path(cfg.data.quarantine), Path(cfg.data.logs))
    needs_models = any(e.needs_q_hat for e in estimators) or any(getattr(p, "needs_q_hat", False) for p in policies.values())
    missing = _nulls_in_propensity(source)
    found = _survey(source, catalog, cfg, needs_models or missing, show_progress, count_routing=missing)
    estimated = found.missing_propensity > 0  # counted on valid rows, as `BanditDataset.has_propensities` does
    if (needs_models or estimated) and found.out_of_order is not None:
        raise OPEError(f"{source.label} is not in time order ({found.out_of_order}). Streaming with outcome or propensity models "
                       "needs the log sorted by ts (files in name order, rows within each file), e.g. "
                       "pl.scan_parquet(...).sort('ts').sink_parquet(...).")
    timings["load"] = time.perf_counter() - t0
    logs, history = found.sample.result()
    sample = dataclasses.replace(batch_dataset(logs, catalog, cfg.evaluation.sla_latency_ms), n_quarantined=found.quarantined)
    feats = batch_features(sample, found.vocab, history, cfg.predictors.history_hours) if needs_models or estimated else None
    del history
    notes: list[str] = []
    propensity = None
    if estimated and feats is not None:
        propensity = fit_propensities(sample, cfg.predictors, show_progress=show_progress, features=feats)
        notes.append(estimated_note(found.missing_propensity, found.rows, propensity))
        assert found.routing is not None  # counted in pass 1 whenever a propensity may be missing
        cfg = model_based_only(cfg, found.routing.finding(), notes)  # on every row: on a sample, small groups look deterministic
        estimators = build_estimators(cfg)
        needs_models = needs_models or any(e.needs_q_hat for e in estimators)
    models = None
    if needs_models and feats is not None:
        with progress("fitting outcome models on the training sample", total=None, enabled=show_progress):
            models = fit_on_sample(sample, feats, cfg.predictors)
    timings["models"] = time.perf_counter() - t0 - timings["load"]
    for policy in policies.values():
        policy.fit(*((sample, None if models is None else models.q_hat) if getattr(policy, "needs_q_hat", False) else (sample,)))
    del feats
    if models is not None:  # the sample's q̂ and features served the fit; keep only what the report saves
        models.q_hat = models.q_hat[:0]
        models.features = dataclasses.replace(models.features, request=models.features.request[:0], history=models.features.history[:0])
    if propensity is not None:
        propensity.probabilities, propensity.propensities = propensity.probabilities[:0], propensity.propensities[:0]
        propensity.features = dataclasses.replace(propensity.features, request=propensity.features.request[:0],
                                                  history=propensity.features.history[:0])
    timings["policies"] = time.perf_counter() - t0 - timings["load"] - timings["models"]
    ctx = BatchContext(cfg, catalog, policies, models, found.vocab, found.feedback, propensity)
    names = ctx.names
    folder = Path(tempfile.mkdtemp(prefix="ope-actions-"))
    actions = {name: folder / f"{i}.parquet" for i, name in enumerate(names)}
    try:
        run = (evaluate or _evaluate)(source, ctx, found, actions, show_progress)
    except BaseException:  # e.g. Ctrl-C or a bad batch: no half-written action files left behind
        shutil.rmtree(folder, ignore_errors=True)
        raise
    notes += [f"{name}: {run.fallback[name]} requests had no eligible official endpoint and were routed by its fallback "
              f"({policy.fallback})." for name, policy in policies.items() if run.fallback[name]]  # type: ignore[attr-defined]
    if found.sample.rows < found.rows and (needs_models or estimated or any(_learns(p) for p in policies.values())):
        notes.append(f"Streamed: outcome and propensity models and learning policies were trained on a uniform sample of "
                     f"{found.sample.rows:,} of {found.rows:,} rows ([data] max_train_rows); every row was evaluated.")
    estimates, diagnostics = _estimate_rows(cfg, run, names, notes)
    slices, breakdowns = run.groups.slices(names), run.groups.breakdowns(names)
    if not found.feedback:
        notes.append("NO SATISFACTION FEEDBACK: no successful request in the log has a satisfaction value, so satisfaction "
                     "cannot be estimated and is shown as missing (failed requests alone would make it look like 0).")
        estimates, slices, breakdowns = (blank_metric(f, "satisfaction") for f in (estimates, slices, breakdowns))
    timings["estimate"] = time.perf_counter() - t0 - sum(timings.values())
    info = StreamInfo(source.files, found.rows, found.quarantined, found.with_satisfaction, found.start, found.end,  # type: ignore[arg-type]
                      [{"model": m, "count": c} for m, c in sorted(found.models.items(), key=lambda mc: (-mc[1], mc[0]))],
                      found.batches, cfg.data.batch_rows, found.sample.rows, actions, cfg.data.engine)
    empty = {name: np.zeros((0, catalog.n_arms)) for name in names}
    return RunResult(cfg, sample, policies, empty, estimates, diagnostics, slices, breakdowns, run.shares.frame(sample),
                     tuple(notes), timings, models, propensity, stream=info)


def _nulls_in_propensity(source: LogSource) -> bool:
    """Whether some row of the files has no logged propensity: pass 1 then keeps history features for a propensity model."""
    if "propensity" not in source.columns:
        return True
    return bool(source.scan().select(pl.col("propensity").null_count()).collect().item() > 0)


def _learns(policy: Policy) -> bool:
    """Whether fitting the policy learns from the rows (the heuristic baselines that do not are exempt)."""
    inner = getattr(policy, "policy", policy)
    return type(inner).__name__ not in ("DirectOfficial", "PriceWeighted", "Uniform")
