"""The shared estimator machinery: input checks, mergeable accumulation, selection and results.

A concrete estimator only says how to turn prepared arrays into per-row `Terms` at a
hyperparameter level; this module does the rest once for all of them: `partial` turns a batch of
rows into mergeable `Partial` sums, `finalize` turns (merged) sums into an `Estimate`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import ClassVar, cast

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError, EstimatorSupportError
from estimators.armpooled import ArmSums
from estimators.batch import Batch, Cells, Prepared, group_weight_sums, prepare, with_modified
from estimators.diagnostics import WeightSums
from estimators.estimate import Diagnostics, Estimate
from estimators.feedback import BanditFeedback
from estimators.inference import Inference, Normal, check_alpha
from estimators.reduction import CellSums, Sums, all_pairs
from estimators.statistic import Kind, Statistic, Terms
from estimators.target import SparseTarget

__all__ = ["BaseEstimator", "Prepared", "Partial", "SupportWarning"]

FloatArray = npt.NDArray[np.float64]
CELLS_PER_CHUNK = 1 << 17  # ~1 MB working arrays stay in cache when columns are few; large fresh temporaries page-fault
MIN_CHUNK_ROWS = 8192  # rows per block at least: tuned estimators (~30 columns × 7 metrics) are bound by per-call overhead below it
Level = float | None


class SupportWarning(UserWarning):
    """The target policy relies on arms or contexts the logger rarely or never tried."""


@dataclass(frozen=True, slots=True)
class Partial:
    """Mergeable sums of one estimator on a batch of rows: add them, then `finalize`.

    Columns are grouped in units, one per hyperparameter level (the last is the untransformed
    reference when the level is chosen automatically), each unit holding the statistic's columns.
    """

    estimator: str
    kind: Kind
    levels: tuple[Level, ...]
    auto: bool
    sums: Sums
    target: WeightSums
    baseline: WeightSums | None
    scalar: bool
    n_boot: int = 0
    seed: int = 0
    arm_sums: bool = False

    def __add__(self, other: Partial) -> Partial:
        mine = (self.estimator, self.kind, self.levels, self.scalar, self.n_boot, self.seed, self.arm_sums)
        if mine != (other.estimator, other.kind, other.levels, other.scalar, other.n_boot, other.seed, other.arm_sums):
            raise EstimatorInputError("Only partial sums of the same estimator, statistic, bootstrap and arm sums can be merged.")
        base = None if self.baseline is None or other.baseline is None else self.baseline + other.baseline
        return Partial(self.estimator, self.kind, self.levels, self.auto, self.sums + other.sums,
                       self.target + other.target, base, self.scalar, self.n_boot, self.seed, self.arm_sums)


class BaseEstimator:
    """Estimate the value of a target policy from logged bandit feedback."""

    name: ClassVar[str] = "base"
    needs_q_hat: ClassVar[bool] = False
    grid: ClassVar[tuple[float, ...]] = ()

    # -- what a concrete estimator provides ---------------------------------------------------
    def _terms_at(self, prep: Prepared, level: Level) -> Terms:
        raise NotImplementedError

    def _setting(self) -> float | str | None:
        """The hyperparameter as configured (a float, "auto"), or None for estimators without one."""
        return None

    def _n_modified(self, w: FloatArray, level: float) -> int:
        """Rows whose weight ``level`` changes."""
        return int((w > level).sum())

    def _pooled_parts(self, prep: Prepared, level: Level) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        """(DM (n, M), w̃ (n,), ε (n, M)) when each row's only varying term is a = DM + w̃ ε, which an arm-pooled
        variance needs (`estimators.armpooled`); None for estimators of another form."""
        return None

    # -- the shared public API ----------------------------------------------------------------
    def estimate(
        self,
        fb: BanditFeedback,
        *,
        target: npt.ArrayLike | SparseTarget,
        q_hat: npt.ArrayLike | None = None,
        inference: Inference | None = None,
        alpha: float = 0.05,
    ) -> Estimate:
        """Value of ``target`` (n, K) on the logged contexts, with interval and diagnostics."""
        inference = Normal() if inference is None else inference
        part = self.partial(fb, target=target, q_hat=q_hat, n_boot=inference.n_boot, seed=inference.seed,
                            arm_sums=inference.arm_sums)
        return self.finalize(part, inference=inference, alpha=alpha)

    def estimate_difference(
        self,
        fb: BanditFeedback,
        *,
        target: npt.ArrayLike | SparseTarget,
        baseline: npt.ArrayLike | SparseTarget,
        q_hat: npt.ArrayLike | None = None,
        inference: Inference | None = None,
        alpha: float = 0.05,
        relative: bool = False,
    ) -> Estimate:
        """Paired target − baseline on the same rows, or with ``relative`` the change in %."""
        inference = Normal() if inference is None else inference
        part = self.partial(fb, target=target, baseline=baseline, q_hat=q_hat, relative=relative,
                            n_boot=inference.n_boot, seed=inference.seed, arm_sums=inference.arm_sums)
        return self.finalize(part, inference=inference, alpha=alpha)

    def partial(
        self,
        fb: BanditFeedback,
        *,
        target: npt.ArrayLike | SparseTarget,
        baseline: npt.ArrayLike | SparseTarget | None = None,
        q_hat: npt.ArrayLike | None = None,
        relative: bool = False,
        n_boot: int = 0,
        seed: int = 0,
        arm_sums: bool = False,
    ) -> Partial:
        """Mergeable sums of one batch of rows (value, or difference / relative with a baseline); ``arm_sums`` also
        keeps the per-arm sums of an arm-pooled variance (`estimators.armpooled`)."""
        if self.needs_q_hat and q_hat is None:
            msg = f"{type(self).__name__} needs q_hat, the reward model's predictions of shape (n, K[, M])."
            raise EstimatorInputError(msg)
        batch = prepare(fb, target=target, baseline=baseline, q_hat=q_hat if self.needs_q_hat else None)
        return self.accumulate(batch, relative=relative, n_boot=n_boot, seed=seed, arm_sums=arm_sums)

    def accumulate(self, batch: Batch, *, relative: bool = False, n_boot: int = 0, seed: int = 0, arm_sums: bool = False
                   ) -> Partial:
        """Partial sums from a batch prepared once (`estimators.batch.prepare`) and shared by estimators."""
        self._check_batch(batch)
        kind: Kind = "value" if batch.baseline is None else ("relative" if relative else "difference")
        levels, auto = self._levels()
        policies = [batch.target] + ([batch.baseline] if batch.baseline is not None else [])
        pairs = _pairs(len(levels), 3 * len(policies), auto)
        units = _units(len(levels), 3 * len(policies))
        fb = batch.fb
        step = self._chunk_rows(policies, levels, fb.n_metrics)
        total: Sums | None = None
        pooled: ArmSums | None = None
        for start in range(0, fb.n, step):
            sl = slice(start, start + step)
            x, constants = self._columns([prep.rows(sl) for prep in policies], levels)
            part = Sums.of(x, np.ascontiguousarray(policies[0].weights[sl].T), pairs=pairs, constants=constants,
                           keys=fb.keys[sl], n_boot=n_boot, seed=seed, units=units)
            total = part if total is None else total + part
            if arm_sums and (arms := self._arm_sums(batch, policies, levels, sl)) is not None:
                pooled = arms if pooled is None else pooled + arms
        assert total is not None
        return self._partial(batch, kind, replace(total, pooled=pooled), n_boot=n_boot, seed=seed, arm_sums=arm_sums)

    def _arm_sums(self, batch: Batch, policies: list[Prepared], levels: tuple[Level, ...], sl: slice) -> ArmSums | None:
        """The arm-pooled variance's sums of rows ``sl`` (None unless the terms are DM + w̃ ε at one fixed level)."""
        if len(levels) != 1:
            return None
        parts = [self._pooled_parts(prep.rows(sl), levels[0]) for prep in policies]
        if any(part is None for part in parts):
            return None
        dm, w, eps = zip(*cast("list[tuple[FloatArray, FloatArray, FloatArray]]", parts), strict=True)
        return ArmSums.of(np.stack([d.T for d in dm], axis=1), np.stack(w), eps[0].T,  # ε is the same for every policy
                          np.ascontiguousarray(policies[0].weights[sl].T), batch.fb.actions[sl], batch.fb.n_arms,
                          pairs=all_pairs(3 * len(policies)), constants=np.tile([np.nan, 0.0, 1.0], len(policies)))

    def _partial(self, batch: Batch, kind: Kind, sums: Sums, *, n_boot: int, seed: int, arm_sums: bool = False) -> Partial:
        """The `Partial` of this estimator's accumulated ``sums`` on ``batch``, with its weight sums and modified rows."""
        levels, auto = self._levels()
        counts = lambda prep: np.array([self._n_modified(prep.w, lv) for lv in levels if lv is not None], dtype=np.int64)  # noqa: E731
        t_sums = with_modified(batch.target_sums, counts(batch.target))
        b_sums = None if batch.baseline is None or batch.baseline_sums is None else with_modified(batch.baseline_sums, counts(batch.baseline))
        return Partial(self.name, kind, levels, auto, sums, t_sums, b_sums, batch.fb.scalar, n_boot, seed, arm_sums)

    def accumulate_groups(self, batch: Batch, target: FloatArray | SparseTarget, cells: Cells) -> list[Partial]:
        """Value partial sums of every group of ``cells`` of a batch prepared with ``target`` and no baseline.

        Equal (to rounding) to `accumulate` on each group's rows prepared alone, in one pass over the rows:
        the terms of each block of cells are reduced per cell (`CellSums`) and the cells added into groups.
        """
        self._check_batch(batch)
        levels, auto = self._levels()
        rows = batch.target.rows(cells.order)
        step = self._chunk_rows([rows], levels, batch.fb.n_metrics)
        blocks, constants = [], np.zeros(0)
        for lo, hi in cells.blocks(step):
            block = rows.rows(cells.rows(lo, hi))
            x, constants = self._columns([block], levels)
            blocks.append(CellSums.of(x, np.ascontiguousarray(block.weights.T), cells.bounds[lo:hi] - cells.bounds[lo]))
        sums = CellSums.concat(blocks).grouped(cells.member, cells.n_groups, pairs=_pairs(len(levels), 3, auto), constants=constants)
        modified = np.zeros((cells.n_groups, sum(lv is not None for lv in levels)), dtype=np.int64)
        for u, level in enumerate(lv for lv in levels if lv is not None):
            if self._n_modified(rows.w, level):  # rows each level modifies, cell by cell (only when some are)
                per_cell = [self._n_modified(rows.w[cells.rows(c, c + 1)], level) for c in range(cells.bounds.size)]
                modified[:, u] = cells.add(np.array(per_cell, dtype=np.float64)).astype(np.int64)
        weights = group_weight_sums(batch, target, cells)
        return [Partial(self.name, "value", levels, auto, s, with_modified(ws, m), None, batch.fb.scalar)
                for s, ws, m in zip(sums, weights, modified, strict=True)]

    def _check_batch(self, batch: Batch) -> None:
        if self.needs_q_hat and not batch.has_q_hat:
            raise EstimatorInputError(f"{type(self).__name__} needs a batch prepared with q_hat.")

    def _levels(self) -> tuple[tuple[Level, ...], bool]:
        """The hyperparameter levels to accumulate, and whether one is chosen automatically among them."""
        setting = self._setting()
        auto = setting == "auto"
        return ((*self.grid, math.inf) if auto else (None if setting is None else float(setting),)), auto  # type: ignore[arg-type]

    def _chunk_rows(self, policies: list[Prepared], levels: tuple[Level, ...], n_metrics: int) -> int:
        """Rows per block: near ``CELLS_PER_CHUNK`` cells of (M, V, rows) terms, and at least ``MIN_CHUNK_ROWS``."""
        return max(MIN_CHUNK_ROWS, CELLS_PER_CHUNK // (max(self._n_varying(policies, levels), 1) * n_metrics))

    def _n_varying(self, policies: list[Prepared], levels: tuple[Level, ...]) -> int:
        """Varying columns V of `_columns` per metric, probed on one row."""
        return sum(len(self._terms_at(prep.rows(slice(0, 1)), levels[0]).varying()) for prep in policies) * len(levels)

    def _columns(self, policies: list[Prepared], levels: tuple[Level, ...]) -> tuple[FloatArray, FloatArray]:
        """The varying columns (M, V, rows) of every level and policy, and the constants of all columns (`Sums.of`)."""
        terms = [self._terms_at(prep, lv) for lv in levels for prep in policies]
        constants = np.array([c for t in terms for c in t.constants()])
        return np.stack([v for t in terms for v in t.varying()], axis=1), constants

    def finalize(
        self, partial: Partial, *, inference: Inference | None = None, alpha: float = 0.05, kind: Kind | None = None
    ) -> Estimate:
        """Turn (merged) partial sums into an `Estimate`.

        ``kind`` overrides the partial's statistic: sums accumulated with a baseline give the
        target's value, the difference and the relative change from one pass over the rows.
        """
        check_alpha(alpha)
        kind = partial.kind if kind is None else kind
        if kind != "value" and partial.baseline is None:
            raise EstimatorInputError(f"A '{kind}' needs partial sums accumulated with a baseline.")
        inference = Normal() if inference is None else inference
        if inference.n_boot and (inference.n_boot, inference.seed) != (partial.n_boot, partial.seed):
            msg = (f"{inference.name} asks for {inference.n_boot} replicates with seed {inference.seed}, but the partial sums "
                   f"hold {partial.n_boot} with seed {partial.seed}: pass n_boot and seed to partial().")
            raise EstimatorInputError(msg)
        if inference.arm_sums and not partial.arm_sums:
            raise EstimatorInputError(f"{inference.name} needs the per-arm sums: pass arm_sums=True to partial().")
        stat = Statistic(kind)
        unit = 3 if partial.baseline is None else 6
        chosen = (_choose(partial, stat, unit) if partial.auto else np.zeros(partial.sums.total.shape[0], dtype=np.int64))
        columns = chosen[None, :] * unit + np.arange(stat.width)[:, None]
        sums = partial.sums.select(columns)
        _check_normalizer(self.name, kind, sums)
        fit = inference.fit(stat, sums)
        value = stat.combine(sums.means)
        low, high = fit.ci(alpha)
        diag = self._diagnostics(partial, chosen, with_baseline=kind != "value")
        for note in diag.warnings:
            warnings.warn(f"{self.name}: {note}", SupportWarning, stacklevel=3)
        unwrap = (lambda x: float(x[0])) if partial.scalar else (lambda x: x)  # noqa: E731
        return Estimate(
            estimator=self.name,
            kind=kind,
            value=unwrap(value),
            stderr=unwrap(fit.stderr),
            ci_low=unwrap(low),
            ci_high=unwrap(high),
            alpha=alpha,
            n=unwrap(sums.count),
            ess=diag.ess,
            inference=getattr(fit, "method", inference.name),
            diagnostics=diag,
            fit=fit,
            scalar=partial.scalar,
        )

    # -- internals ------------------------------------------------------------------------------
    def _diagnostics(self, partial: Partial, chosen: npt.NDArray[np.int64], *, with_baseline: bool) -> Diagnostics:
        levels = partial.levels
        hyper: float | tuple[float, ...] | None
        if partial.auto:
            hyper = tuple(float(levels[c]) for c in chosen)
            hyper = hyper[0] if partial.scalar else hyper
        else:
            hyper = None if levels[0] is None or math.isinf(levels[0]) else float(levels[0])
        parts = [partial.target] + ([partial.baseline] if with_baseline and partial.baseline is not None else [])
        diags = []
        for ws in parts:
            n_mod = int(max(ws.modified[c] for c in chosen)) if ws.modified.size else 0
            diags.append(ws.finalize(n_modified=n_mod, hyperparameter=hyper))
        return diags[0] if len(diags) == 1 else _worse(diags[0], diags[1])


def _check_normalizer(name: str, kind: Kind, sums: Sums) -> None:
    """Self-normalized estimators are undefined when the target gives no logged row any weight."""
    blocks = [0] if kind == "value" else [0, 3]
    for start in blocks:
        if (sums.first[start + 2] == 0).any():
            who = "target" if start == 0 else "baseline"
            msg = (f"{name}: the {who} gives zero probability to every logged action, so the normalizer Σ w is 0 and "
                   "a self-normalized estimate is undefined (no overlap with the logging policy).")
            raise EstimatorSupportError(msg)
    if kind == "relative":
        base = Statistic("value").combine(sums.means[3:])
        if (base == 0).any():
            warnings.warn(f"{name}: the baseline's value is 0 for some metrics; their relative change is undefined (NaN).",
                          SupportWarning, stacklevel=4)


def _pairs(n_units: int, j: int, auto: bool) -> npt.NDArray[np.int64]:
    """Column pairs to keep: within every unit, and (when tuning) every unit with the reference."""
    within = all_pairs(j)
    out = [within + u * j for u in range(n_units)]
    if auto:
        ref = (n_units - 1) * j
        a, b = np.meshgrid(np.arange(j), np.arange(j), indexing="ij")
        for u in range(n_units - 1):
            out.append(np.stack([a.ravel() + u * j, b.ravel() + ref], axis=1))
    return np.concatenate(out).astype(np.int64)


def _units(n_units: int, j: int) -> npt.NDArray[np.int64]:
    """Column ranges [lo, hi) of the units, one per level: third moments are kept within each (a skewness needs no more)."""
    lo = np.arange(n_units, dtype=np.int64) * j
    return np.stack([lo, lo + j], axis=1)


def _choose(partial: Partial, stat: Statistic, unit: int) -> npt.NDArray[np.int64]:
    """Per metric, the level whose estimated MSE is smallest (see `estimators.tuning`)."""
    from estimators.tuning import estimated_mse

    return np.argmin(estimated_mse(partial.sums, stat, len(partial.levels), unit), axis=0).astype(np.int64)


def _worse(a: Diagnostics, b: Diagnostics) -> Diagnostics:
    """Diagnostics of a paired comparison: the worse of the two policies on each count."""
    pick = a if a.ess <= b.ess else b
    return Diagnostics(
        ess=min(a.ess, b.ess),
        max_weight=max(a.max_weight, b.max_weight),
        mean_weight=pick.mean_weight,
        mean_weight_se=pick.mean_weight_se,
        mean_weight_flag=a.mean_weight_flag or b.mean_weight_flag,
        unsupported_share=max(a.unsupported_share, b.unsupported_share),
        n_modified=max(a.n_modified, b.n_modified),
        hyperparameter=a.hyperparameter,
        warnings=tuple(dict.fromkeys(a.warnings + b.warnings)),
    )

