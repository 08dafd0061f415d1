"""The one per-batch evaluation of every run, and the partial sums it adds to.

`evaluate_batch` adds one batch's rows to mergeable partial sums (DESIGN §5): every policy ×
estimator, the per-period and per-group tables and provider shares. Every engine calls it: the
in-memory engine once, on the whole log; the local engine on each streamed batch; Ray in worker
tasks, whose sums the driver merges. Given the same rows it returns the same sums wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from estimators import BanditFeedback, BaseEstimator, EstimatorInputError, SparseTarget
from estimators.base import Partial
from estimators.batch import Batch, Shared
from estimators.combined import accumulate_all
from estimators.inference import Inference
from ope.config import ExperimentConfig
from ope.data.catalog import Catalog
from ope.data.dataset import BanditDataset
from ope.data.validate import ValidatedLogs
from ope.evaluation.actions import action_tables
from ope.evaluation.distributions import DistributionSpec, DistributionSums
from ope.evaluation.plan import Plan
from ope.evaluation.tables import GroupEstimates, ShareSums
from ope.evaluation.weights import WeightHistogram
from ope.models.predictors import OutcomeModels, predict_q_hat
from ope.models.propensity import PropensityModel, predict_propensities
from ope.models.sample import Vocabulary, batch_features
from policies import Policy
from policies.base import Pairs

__all__ = ["BatchContext", "BatchPartials", "BatchRows", "batch_dataset", "evaluate_batch", "policy_target", "score_rows"]

FloatArray = npt.NDArray[np.float64]
#: (row, arm) pairs evaluated at once when outcome or propensity models score them (≈ 110 MB of q̂)
MODEL_CELLS = 2_000_000


def policy_target(policy: Policy, ds: BanditDataset, pairs: Pairs, q_hat: FloatArray | None = None) -> SparseTarget:
    """A policy's probabilities on a batch at its eligible pairs (``pairwise`` policies never build the (n, K) matrix)."""
    values = np.asarray(policy.pair_probabilities(ds, pairs, q_hat), dtype=np.float64)
    return SparseTarget(pairs.rows, pairs.arms, values, (ds.n, ds.catalog.n_arms))


def batch_dataset(logs: pl.DataFrame, catalog: Catalog, sla_latency_ms: float) -> BanditDataset:
    """Rows that passed validation as a dataset."""
    validated = ValidatedLogs(logs=logs, problems=(), n_input=logs.height, bad_rows=logs.clear())
    return BanditDataset.from_validated(validated, catalog, sla_latency_ms=sla_latency_ms)


@dataclass(frozen=True, slots=True)
class BatchRows:
    """A batch ready to evaluate: its rows, their feedback (logged or estimated propensities) and q̂ (or None)."""

    dataset: BanditDataset
    feedback: BanditFeedback
    q_hat: FloatArray | None = None


@dataclass
class BatchContext:
    """What every batch needs, fixed after the fit: settings, plan, catalog, fitted policies and models.

    ``groups`` False skips the per-group tables and provider shares (`ope tune` needs only the estimates);
    ``actions`` names the policies whose action tables are built (None: every policy; ``[output] actions``).
    """

    plan: Plan
    catalog: Catalog
    policies: dict[str, Policy]
    models: OutcomeModels | None
    vocab: Vocabulary | None
    feedback: bool
    propensity: PropensityModel | None = None
    groups: bool = True
    actions: tuple[str, ...] | None = None
    distributions: DistributionSpec | None = None

    @property
    def cfg(self) -> ExperimentConfig:
        """The settings (the plan's config)."""
        return self.plan.config

    @property
    def needs_history(self) -> bool:
        """Whether batches need their history block (for outcome or propensity models)."""
        return self.models is not None or self.propensity is not None

    @property
    def names(self) -> list[str]:
        """Policy names in config order."""
        return list(self.policies)

    def dataset(self, logs: pl.DataFrame) -> BanditDataset:
        """A batch of validated rows as a dataset."""
        return batch_dataset(logs, self.catalog, self.cfg.evaluation.sla_latency_ms)

    def empty(self) -> BatchPartials:
        """Zero partial sums to add batches to."""
        groups = GroupEstimates(self.plan.headline, self.cfg.evaluation.time_slice, self.plan.alpha) if self.groups else None
        shares = ShareSums(self.catalog.n_arms, self.names) if self.groups else None
        return BatchPartials(groups=groups, shares=shares, fallback=dict.fromkeys(self.policies, 0),
                             weights=WeightHistogram() if self.groups else None,
                             cdfs=None if self.distributions is None else DistributionSums(self.distributions))


@dataclass
class BatchPartials:
    """Partial sums of every policy × estimator, the per-group tables, provider shares and weight histograms."""

    groups: GroupEstimates | None
    shares: ShareSums | None
    fallback: dict[str, int]
    weights: WeightHistogram | None = None
    cdfs: DistributionSums | None = None
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
        if self.groups is not None and other.groups is not None:
            self.groups.merge(other.groups)
        if self.shares is not None and other.shares is not None:
            self.shares.merge(other.shares)
        if self.weights is not None and other.weights is not None:
            self.weights.merge(other.weights)
        if self.cdfs is not None and other.cdfs is not None:
            self.cdfs.merge(other.cdfs)


def score_rows(ctx: BatchContext, ds: BanditDataset, history: FloatArray | None) -> BatchRows:
    """A batch read from the log, scored: features (``history``: its (n, K, 3) history block), estimated
    propensities where the fit estimated them, and q̂ from each row's own fold model."""
    feats = None
    if ctx.needs_history:
        if history is None or ctx.vocab is None:
            raise ValueError("score_rows: outcome and propensity models need the batch's history block and the log's vocabulary.")
        feats = batch_features(ds, ctx.vocab, history, ctx.cfg.predictors.history_hours)
    p_hat = None if ctx.propensity is None or feats is None else predict_propensities(ctx.propensity, ds, feats, ctx.cfg.predictors)
    q_hat = None if ctx.models is None or feats is None else predict_q_hat(ctx.models, ds, feats)
    return BatchRows(ds, ds.to_feedback(p_hat, fill_satisfaction=not ctx.feedback), q_hat)


def evaluate_log_batch(ctx: BatchContext, ds: BanditDataset, history: FloatArray | None, into: BatchPartials) -> dict[str, pa.Table]:
    """`score_rows` and `evaluate_batch` on a batch read from the log, in slices of at most `MODEL_CELLS`
    (row, arm) pairs when models score it (q̂ holds 7 floats per pair; the sums add up the same)."""
    rows = max(1, MODEL_CELLS // ds.catalog.n_arms) if ctx.needs_history else ds.n
    if ds.n <= rows:
        return evaluate_batch(ctx, score_rows(ctx, ds, history), into)
    tables: dict[str, list[pa.Table]] = {}
    for start in range(0, ds.n, rows):
        part = np.zeros(ds.n, dtype=bool)
        part[start:start + rows] = True
        scored = score_rows(ctx, ds.subset(part), None if history is None else history[start:start + rows])
        for name, table in evaluate_batch(ctx, scored, into).items():
            tables.setdefault(name, []).append(table)
    return {name: pa.concat_tables(parts) for name, parts in tables.items()}


def evaluate_batch(ctx: BatchContext, batch: BatchRows, into: BatchPartials,
                   step: Callable[[str], None] | None = None) -> dict[str, pa.Table]:
    """Add one batch to ``into``: every policy's action probabilities, every estimator's partial sums and the
    per-group sums; return each policy's action table. ``step(policy)`` is called twice per policy (routed,
    estimated), for a progress bar."""
    ds, fb, q_hat = batch.dataset, batch.feedback, batch.q_hat
    pairs = Pairs.of(ds.eligible)
    probabilities: dict[str, SparseTarget] = {}
    for name, policy in ctx.policies.items():
        probabilities[name] = policy_target(policy, ds, pairs, q_hat)
        into.fallback[name] += policy.n_fallback_
        if step is not None:
            step(name)
    shared = Shared.of(fb, q_hat, require_observed=False)  # q̂ checked once, each policy prepared once
    prepared = {name: shared.policy(pi) for name, pi in probabilities.items()}
    baseline = prepared[ctx.plan.baseline]
    inference = ctx.plan.inference
    for name, prep in prepared.items():
        paired = shared.batch(prep, baseline if name != ctx.plan.baseline else None)
        live = [est for est in ctx.plan.estimators if (name, est.name) not in into.failed]
        for est, part in _accumulated(paired, live, inference, into.failed, name):
            key = (name, est.name)
            into.parts[key] = into.parts[key] + part if key in into.parts else part
        for key in [k for k in into.parts if k in into.failed]:  # refused by a later batch: no estimate at all
            del into.parts[key]
        if step is not None:
            step(name)
    if into.groups is not None and into.shares is not None:
        into.groups.add(ds, fb, probabilities, {name: shared.batch(prep) for name, prep in prepared.items()})
        into.shares.add(ds, probabilities)
    if into.weights is not None:
        for name, (prep, _) in prepared.items():
            into.weights.add(name, prep.w, fb.weights)
    if into.cdfs is not None:
        into.cdfs.add(ds, fb, q_hat, probabilities, {name: prep.w for name, (prep, _) in prepared.items()})
    into.rows += ds.n
    written = ctx.names if ctx.actions is None else ctx.actions
    return action_tables(ds.logs["request_id"], ds.arms, {name: probabilities[name] for name in written})


def _accumulated(batch: Batch, estimators: list[BaseEstimator], inference: Inference, failed: dict[tuple[str, str], str],
                 name: str) -> list[tuple[BaseEstimator, Partial]]:
    """Every estimator's sums on a prepared batch in one pass (`estimators.accumulate_all`: one bootstrap for all);
    when one of them refuses the batch, each on its own, the refusals noted in ``failed`` (and dropped)."""
    if not estimators:
        return []
    sums = {"n_boot": inference.n_boot, "seed": inference.seed, "arm_sums": inference.arm_sums}
    try:
        return list(zip(estimators, accumulate_all(batch, estimators, **sums).parts, strict=True))
    except EstimatorInputError:
        pass
    out = []
    for est in estimators:
        try:
            out.append((est, est.accumulate(batch, **sums)))
        except EstimatorInputError as exc:
            failed[(name, est.name)] = str(exc)
    return out

