"""The work of one batch of a streamed or distributed run, and the partial sums it adds to.

`evaluate_batch` is the per-batch function of both engines: the local stream (`ope.evaluation.engines.local`)
calls it on each batch in turn, and Ray (`ope.evaluation.engines.ray`) calls it in worker tasks on Arrow
batches and merges the `BatchPartials` on the driver. Given the same rows it returns the same sums
wherever it runs: q̂ of each row comes from its own fold's model, and every estimate is a sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from estimators import BaseEstimator, EstimatorInputError, SparseTarget
from estimators.base import Partial
from estimators.batch import Shared
from ope.data.catalog import Catalog
from ope.config import ExperimentConfig
from ope.data.dataset import BanditDataset
from ope.models.predictors import OutcomeModels, predict_q_hat
from ope.models.propensity import PropensityModel, predict_propensities
from ope.evaluation.run import build_estimators, build_inference, primary_estimator
from ope.evaluation.groups import GroupEstimates, ShareSums
from ope.models.sample import Vocabulary, batch_features
from ope.data.validate import ValidatedLogs
from policies import Policy
from policies.base import Pairs

__all__ = ["ACTION_SCHEMA", "BatchContext", "BatchPartials", "action_table", "action_tables", "action_writer", "action_writers", "batch_dataset", "evaluate_batch", "policy_target"]

FloatArray = npt.NDArray[np.float64]
#: (row, arm) pairs evaluated at once when outcome or propensity models score them (≈ 110 MB of q̂)
MODEL_CELLS = 2_000_000
ACTION_SCHEMA = pa.schema([("request_id", pa.large_string()), ("arm", pa.large_string()), ("probability", pa.float64())])


def action_writer(path: Path) -> pq.ParquetWriter:
    """A parquet writer of action tables (request_ids are unique: dictionary-encoding only ``arm`` halves write time)."""
    return pq.ParquetWriter(path, ACTION_SCHEMA, use_dictionary=["arm"])


@contextmanager
def action_writers(paths: dict[str, Path]) -> Iterator[dict[str, pq.ParquetWriter]]:
    """An open `action_writer` per policy, all closed however the block ends."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(action_writer(path)) for name, path in paths.items()}


def action_table(request_ids: pl.Series, arms: tuple[str, ...], pi: FloatArray | SparseTarget) -> pa.Table:
    """``request_id, arm, probability`` of every non-zero action probability, row by row."""
    return action_tables(request_ids, arms, {"": pi if isinstance(pi, SparseTarget) else SparseTarget.of(pi)})[""]


def action_tables(request_ids: pl.Series, arms: tuple[str, ...], probabilities: dict[str, SparseTarget]) -> dict[str, pa.Table]:
    """`action_table` of several policies on the same rows (request ids converted once)."""
    ids = request_ids.cast(pl.String).to_arrow().cast(pa.large_string())
    names = pa.array(arms, type=pa.large_string())
    out = {}
    for name, sp in probabilities.items():
        keep = sp.values != 0
        rows, cols = pa.array(sp.rows[keep]), pa.array(sp.arms[keep])
        out[name] = pa.table([ids.take(rows), names.take(cols), pa.array(sp.values[keep], type=pa.float64())], schema=ACTION_SCHEMA)
    return out


def policy_target(policy: Policy, ds: BanditDataset, pairs: Pairs, *args: Any) -> SparseTarget:
    """A policy's probabilities on a batch at its non-zero pairs: computed at the eligible pairs alone
    when the policy can (`policies.base.Pairs`), else read off its (n, K) matrix."""
    if hasattr(policy, "pair_probabilities"):
        return SparseTarget(pairs.rows, pairs.arms, policy.pair_probabilities(ds, pairs, *args), (ds.n, ds.catalog.n_arms))
    return SparseTarget.of(policy.action_probabilities(ds, *args))


def batch_dataset(logs: pl.DataFrame, catalog: Catalog, sla_latency_ms: float) -> BanditDataset:
    """Rows that passed validation as a dataset."""
    validated = ValidatedLogs(logs=logs, problems=(), n_input=logs.height, bad_rows=logs.clear())
    return BanditDataset.from_validated(validated, catalog, sla_latency_ms=sla_latency_ms)


@dataclass
class BatchContext:
    """What every batch needs, fixed after the fit: settings, catalog, fitted policies and models."""

    cfg: ExperimentConfig
    catalog: Catalog
    policies: dict[str, Policy]
    models: OutcomeModels | None
    vocab: Vocabulary
    feedback: bool
    propensity: PropensityModel | None = None

    @property
    def needs_history(self) -> bool:
        """Whether batches need their history block (for outcome or propensity models)."""
        return self.models is not None or self.propensity is not None

    @cached_property
    def estimators(self) -> list[BaseEstimator]:
        """The configured estimators."""
        return build_estimators(self.cfg)

    @property
    def names(self) -> list[str]:
        """Policy names in config order."""
        return list(self.policies)

    def dataset(self, logs: pl.DataFrame) -> BanditDataset:
        """A batch of validated rows as a dataset."""
        return batch_dataset(logs, self.catalog, self.cfg.evaluation.sla_latency_ms)

    def empty(self) -> BatchPartials:
        """Zero partial sums to add batches to."""
        headline = next(e for e in self.estimators if e.name == primary_estimator([e.name for e in self.estimators]))
        ev = self.cfg.evaluation
        return BatchPartials(groups=GroupEstimates(headline, ev.time_slice, ev.alpha), shares=ShareSums(self.catalog.n_arms, self.names),
                             fallback=dict.fromkeys(self.policies, 0))


@dataclass
class BatchPartials:
    """Partial sums of every policy × estimator, the per-group tables and provider shares."""

    groups: GroupEstimates
    shares: ShareSums
    fallback: dict[str, int]
    parts: dict[tuple[str, str], Partial] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    rows: int = 0

    def merge(self, other: BatchPartials) -> None:
        """Fold another set of batches' sums into these."""
        self.rows += other.rows
        self.failed = other.failed | self.failed
        for key, part in other.parts.items():
            self.parts[key] = self.parts[key] + part if key in self.parts else part
        for key in self.failed:
            self.parts.pop(key, None)
        for name, count in other.fallback.items():
            self.fallback[name] = self.fallback.get(name, 0) + count
        self.groups.merge(other.groups)
        self.shares.merge(other.shares)


def evaluate_batch(ctx: BatchContext, ds: BanditDataset, history: FloatArray | None, into: BatchPartials) -> dict[str, pa.Table]:
    """Add one batch to ``into``: q̂ (with ``history``, its (n, K, 3) history block), every policy's
    action probabilities and every estimator's partial sums; return each policy's action table.

    With outcome or propensity models the batch is worked through in slices of at most
    `MODEL_CELLS` (row, arm) pairs: q̂ holds 7 floats per pair, and the sums add up the same.
    """
    rows = max(1, MODEL_CELLS // ds.catalog.n_arms) if ctx.needs_history else ds.n
    if ds.n <= rows:
        return _evaluate_rows(ctx, ds, history, into)
    tables: dict[str, list[pa.Table]] = {}
    for start in range(0, ds.n, rows):
        part = np.zeros(ds.n, dtype=bool)
        part[start:start + rows] = True
        done = _evaluate_rows(ctx, ds.subset(part), None if history is None else history[start:start + rows], into)
        for name, table in done.items():
            tables.setdefault(name, []).append(table)
    return {name: pa.concat_tables(parts) for name, parts in tables.items()}


def _evaluate_rows(ctx: BatchContext, ds: BanditDataset, history: FloatArray | None, into: BatchPartials) -> dict[str, pa.Table]:
    cfg, models = ctx.cfg, ctx.models
    inference = build_inference(cfg)
    feats = None
    if ctx.needs_history:
        if history is None:
            raise ValueError("evaluate_batch: outcome and propensity models need the batch's history block.")
        feats = batch_features(ds, ctx.vocab, history, cfg.predictors.history_hours)
    p_hat = None if ctx.propensity is None or feats is None else predict_propensities(ctx.propensity, ds, feats, cfg.predictors)
    fb = ds.to_feedback(p_hat, fill_satisfaction=not ctx.feedback)
    q_hat = None if models is None or feats is None else predict_q_hat(models, ds, feats)
    pairs = Pairs.of(ds.eligible)
    probabilities: dict[str, SparseTarget] = {}
    for name, policy in ctx.policies.items():
        probabilities[name] = policy_target(policy, ds, pairs, *((q_hat,) if getattr(policy, "needs_q_hat", False) else ()))
        into.fallback[name] += getattr(policy, "n_fallback_", 0)
    shared = Shared.of(fb, q_hat, require_observed=False)  # q̂ checked once, each policy prepared once
    prepared = {name: shared.policy(pi) for name, pi in probabilities.items()}
    baseline = prepared[cfg.evaluation.baseline]
    for name, prep in prepared.items():
        batch = shared.batch(prep, baseline if name != cfg.evaluation.baseline else None)
        for est in ctx.estimators:
            key = (name, est.name)
            if key in into.failed:
                continue
            try:
                part = est.accumulate(batch, n_boot=inference.n_boot, seed=inference.seed)
            except EstimatorInputError as exc:
                into.failed[key] = str(exc)
                into.parts.pop(key, None)
                continue
            into.parts[key] = into.parts[key] + part if key in into.parts else part
    into.groups.add(ds, fb, probabilities, {name: shared.batch(prep) for name, prep in prepared.items()})
    into.shares.add(ds, probabilities)
    into.rows += ds.n
    return action_tables(ds.logs["request_id"], ds.arms, probabilities)
