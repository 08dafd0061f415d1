"""The local engine (`ope run --streaming`): the log read in batches, in bounded memory, on this machine.

1. **Survey** (`ope.evaluation.survey`): validate every batch, sum the facts, keep the log-wide
   vocabulary and a uniform training sample of at most ``[data] max_train_rows`` rows with their
   history features.
2. **Fit** (`ope.evaluation.fit`) on the sample, cross-fitted with folds from the row key.
3. **Evaluate**: validate each batch again, score it (features, q̂, estimated propensities, each row
   by its own fold's models) and add it to the partial sums (`ope.evaluation.batch`); the next batch
   is read, and the last batch's action files written, in background threads.

Memory holds one batch, the training sample, the last history window and the partial sums,
whatever the number of rows. The log must be in time order when outcome or propensity models are
needed (their history features look back ``history_hours`` across batch boundaries); a log out of
order is refused with the first offending row. Online routers (mess_plus, stage_route) are
sequential by nature and are refused.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import polars as pl
from threadpoolctl import threadpool_limits

from estimators import SupportWarning
from ope.data.batch_checks import checked_batches
from ope.data.catalog import Catalog, load_catalog
from ope.data.overlap import OverlapFinding, RoutingCounts
from ope.data.readers import PARQUET_SUFFIXES, is_multi_file
from ope.data.schema import METRICS
from ope.data.source import LogSource
from ope.data.validate import check_quarantine
from ope.errors import ConfigError, OPEError
from ope.evaluation.actions import ActionFiles, action_writers
from ope.evaluation.batch import BatchContext, BatchPartials, batch_dataset, evaluate_log_batch
from ope.evaluation.fit import Fitted, TrainingData
from ope.evaluation.io_threads import prefetched, writes
from ope.evaluation.plan import Plan
from ope.evaluation.survey import Survey, survey
from ope.models.history import HistoryWindow
from ope.models.sample import batch_features
from ope.progress import progress
from policies import Policy

__all__ = ["LocalEngine", "estimated_memory_mb", "streaming_wanted"]


def estimated_memory_mb(n_rows: int, n_arms: int, n_policies: int) -> float:
    """Rough peak of an in-memory run: q̂ (n × K × M), the history features (n × K × 3), eligibility and
    prices (≈ 2 n × K) and one probability matrix per policy (n × K), in float64."""
    return n_rows * n_arms * 8 * (len(METRICS) + 3 + 2 + n_policies) / 1e6


def streaming_wanted(plan: Plan) -> bool:
    """``[data] streaming``, or a parquet log whose in-memory run would exceed ``[data] memory_budget_mb``."""
    cfg = plan.config
    if cfg.data.streaming:
        return True
    logs = cfg.data.logs
    if not is_multi_file(logs) and Path(logs).suffix.lower() not in PARQUET_SUFFIXES:
        return False
    n_rows = LogSource.open(logs).n_rows
    return estimated_memory_mb(n_rows, load_catalog(cfg.data.catalog).n_arms, len(cfg.policies)) > cfg.data.memory_budget_mb


class LocalEngine:
    """Batches of ``[data] batch_rows`` rows from one polars scan, evaluated on this machine."""

    name = "local"

    def __init__(self) -> None:
        self.source: LogSource | None = None
        self.found: Survey | None = None
        self.catalog: Catalog | None = None

    def check(self, plan: Plan, policies: dict[str, Policy]) -> None:
        """Settings a streamed run cannot honour are refused before any data is read."""
        cfg = plan.config
        for key in ("batch_rows", "max_train_rows"):
            if getattr(cfg.data, key) < 1:
                raise ConfigError(f"{cfg.source}: [data] {key} must be an int >= 1. Got {getattr(cfg.data, key)}.")
        if cfg.predictors.time_blocked:
            raise ConfigError(f"{cfg.source}: [predictors] time_blocked folds need the whole log; streaming assigns folds from the row key.")
        online = [name for name, p in policies.items() if p.online]
        if online:
            raise ConfigError(f"Policies {online} learn online in arrival order (mess_plus, stage_route) and cannot be evaluated in "
                              "streaming mode yet; run them on a log that fits in memory (without --streaming, raising [data] "
                              "memory_budget_mb).")

    def load(self, plan: Plan, policies: dict[str, Policy], *, show_progress: bool = True) -> TrainingData:
        """Pass 1, and the training sample as a dataset with its log-wide features."""
        cfg = plan.config
        needs_models = plan.needs_q_hat or any(p.needs_q_hat for p in policies.values())
        self.catalog = load_catalog(cfg.data.catalog)
        self.source = source = LogSource.open(cfg.data.logs)
        if cfg.data.quarantine is not None:
            check_quarantine(Path(cfg.data.quarantine), Path(cfg.data.logs))
        missing = _nulls_in_propensity(source)
        self.found = found = survey(source, self.catalog, cfg, needs_models or missing, show_progress, count_routing=missing)
        estimated = found.facts.missing_propensity > 0  # counted on valid rows, as `BanditDataset.has_propensities` does
        if (needs_models or estimated) and found.out_of_order is not None:
            raise OPEError(f"{source.label} is not in time order ({found.out_of_order}). Streaming with outcome or propensity models "
                           "needs the log sorted by ts (files in name order, rows within each file), e.g. "
                           "pl.scan_parquet(...).sort('ts').sink_parquet(...).")
        logs, history = found.sample.result()
        sample = dataclasses.replace(batch_dataset(logs, self.catalog, cfg.evaluation.sla_latency_ms), n_quarantined=found.facts.quarantined)
        feats = batch_features(sample, found.vocab, history, cfg.predictors.history_hours) if needs_models or estimated else None
        routing = found.routing
        return TrainingData(sample, found.facts, lambda: _finding(routing), whole_log=found.sample.rows >= found.facts.rows,
                            features=feats, vocab=found.vocab)

    def evaluate(self, ctx: BatchContext, fitted: Fitted, data: TrainingData, actions: ActionFiles, *,
                 show_progress: bool = True) -> BatchPartials:
        """Pass 2: every batch validated again, scored and summed; action files written as it goes.

        BLAS runs on one thread: its products here are small and memory-bound, and on a machine whose
        cores are busy, OpenBLAS's spinning threads made a 10⁶-row run 5× slower (115 s against 21 s).
        """
        assert self.source is not None and self.found is not None
        window = HistoryWindow(ctx.catalog.n_arms, ctx.cfg.predictors.history_hours) if ctx.needs_history else None
        total = ctx.empty()
        checked = checked_batches(self.source, ctx.catalog, ctx.cfg.data.batch_rows, self.found.repeated)
        datasets = (ctx.dataset(check.logs) for check in checked if check.logs is not None and check.logs.height)
        # writes() inside action_writers(): its pending writes finish before the writers close, however the pass ends
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"), action_writers(actions.paths) as writers, \
                writes() as background, progress("evaluating rows", total=self.found.facts.rows, enabled=show_progress) as bar:
            warnings.simplefilter("ignore", SupportWarning)
            for ds in prefetched(datasets):  # the next batch is read, checked and built while this one is summed
                background.submit(evaluate_log_batch(ctx, ds, None if window is None else window(ds), total), writers)
                bar.update(ds.n)
        return total

    def streamed(self, plan: Plan) -> dict[str, object]:
        """How the log was read (summary.json's ``streamed``)."""
        assert self.source is not None and self.found is not None
        return {"engine": self.name, "files": len(self.source.files), "batches": self.found.batches,
                "batch_rows": plan.config.data.batch_rows, "train_rows": self.found.sample.rows}


def _finding(routing: RoutingCounts | None) -> OverlapFinding:
    """The deterministic-logger finding on every row (on a sample, small groups look deterministic)."""
    assert routing is not None  # counted in pass 1 whenever a propensity may be missing
    return routing.finding()


def _nulls_in_propensity(source: LogSource) -> bool:
    """Whether some row of the files has no logged propensity: pass 1 then keeps history features for a propensity model."""
    if "propensity" not in source.columns:
        return True
    return bool(source.scan().select(pl.col("propensity").null_count()).collect().item() > 0)
