"""One validated batch of rows with its policies' importance weights: prepared once, shared by every estimator."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError, EstimatorSupportError
from estimators.diagnostics import WeightSums
from estimators.feedback import BanditFeedback
from estimators.target import SparseTarget

__all__ = ["Batch", "Cells", "Prepared", "Shared", "group_weight_sums", "prepare"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ROW_SUM_TOL = 1e-6
BLOCK_ROWS = 1 << 16  # rows per block where q̂ (rows × K × M) is read pair by pair: temporaries of a few MB
CELL_ROWS = 2048  # longest cell, so that blocks of whole cells stay near a chosen size
Q_NOT_FINITE = "q_hat must be finite on every eligible (row, arm)."


@dataclass(frozen=True, slots=True)
class Prepared:
    """Validated arrays of one policy on a batch, metrics always on the last axis.

    w (n,) importance weights; rewards (n, M) with missing set to 0; weights (n, M) = sample weight
    × observed; dm (n, M) = Σ_a π(a|x) q̂(x, a) and q_logged (n, M) = q̂(x, a_i), or None without q̂.
    """

    w: FloatArray
    rewards: FloatArray
    weights: FloatArray
    dm: FloatArray | None
    q_logged: FloatArray | None

    def rows(self, sl: slice | npt.NDArray[np.int64]) -> Prepared:
        """A block of rows (a slice, or row indices)."""
        cut = lambda x: None if x is None else x[sl]  # noqa: E731
        return Prepared(self.w[sl], self.rewards[sl], self.weights[sl], cut(self.dm), cut(self.q_logged))


@dataclass(frozen=True, slots=True)
class Batch:
    """A feedback batch with the target's (and optionally the baseline's) prepared arrays."""

    fb: BanditFeedback
    target: Prepared
    baseline: Prepared | None
    target_sums: WeightSums
    baseline_sums: WeightSums | None
    has_q_hat: bool


def _check_target(fb: BanditFeedback, target: npt.ArrayLike | SparseTarget, name: str) -> SparseTarget:
    """The target at its non-zero pairs, checked: shape, finite non-negative probabilities, rows summing to 1, eligible
    support. Mass off the eligible set within rounding (≤ 1e-9 a row) is dropped: q̂ is only ever read on eligible pairs."""
    if isinstance(target, SparseTarget):
        if tuple(target.shape) != (fb.n, fb.n_arms):
            raise EstimatorInputError(f"{name} must have shape (n, K) = {(fb.n, fb.n_arms)}. Got {target.shape}.")
        if (problem := target.problem()) is not None:
            raise EstimatorInputError(f"{name}: {problem}.")
        sp = SparseTarget(np.asarray(target.rows, dtype=np.int64), np.asarray(target.arms, dtype=np.int64),
                          np.asarray(target.values, dtype=np.float64), (fb.n, fb.n_arms))
        if not np.isfinite(sp.values).all() or (sp.values.size and sp.values.min() < -1e-12):
            raise EstimatorInputError(f"{name} must hold finite, non-negative probabilities.")
        sums = sp.per_row(sp.values)
    else:
        pi = np.asarray(target, dtype=np.float64)
        if pi.shape != (fb.n, fb.n_arms):
            raise EstimatorInputError(f"{name} must have shape (n, K) = {(fb.n, fb.n_arms)}. Got {pi.shape}.")
        sums = np.einsum("nk->n", pi)  # finite row sums mean finite entries (else overflow: check them one by one)
        if not (bool(np.isfinite(sums).all()) or bool(np.isfinite(pi).all())) or (pi.size and pi.min() < -1e-12):
            raise EstimatorInputError(f"{name} must hold finite, non-negative probabilities.")
        sp = SparseTarget.of(pi)
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        rows = np.flatnonzero(off)[:5].tolist()
        msg = f"{name} rows must sum to 1. {int(off.sum())} rows do not (first rows {rows}: sums {sums[rows].tolist()})."
        raise EstimatorInputError(msg)
    if fb.eligible is not None and not (ok := fb.eligible[sp.rows, sp.arms]).all():
        outside = np.bincount(sp.rows[~ok], weights=sp.values[~ok], minlength=fb.n) > 1e-9
        if outside.any():
            rows = np.flatnonzero(outside)[:5].tolist()
            msg = f"{name} puts probability outside the eligible set on {int(outside.sum())} rows (first rows {rows})."
            raise EstimatorSupportError(msg)
        sp = SparseTarget(sp.rows[ok], sp.arms[ok], sp.values[ok], sp.shape)
    return sp


def _q_shaped(fb: BanditFeedback, q_hat: npt.ArrayLike) -> FloatArray:
    """q̂ as (n, K, M), or a clear error."""
    q = np.asarray(q_hat, dtype=np.float64)
    if fb.scalar and q.ndim == 2:
        q = q[:, :, None]
    want = (fb.n, fb.n_arms, fb.n_metrics)
    if q.shape != want:
        shown = want[:2] if fb.scalar else want
        msg = f"q_hat must have shape {shown} to match the feedback. Got {np.asarray(q_hat).shape}."
        raise EstimatorInputError(msg)
    return q


def _weight_sums(fb: BanditFeedback, w: FloatArray, mass: FloatArray, unsupported: float | None) -> WeightSums:
    """The target's `WeightSums` on the rows of ``fb`` from its weights ``w`` and its mass Σ s π (K,)."""
    s = fb.weights
    return WeightSums(
        n=fb.n, s=float(s.sum()), sw=float(s @ w), s2w=float((s * s) @ w), s2w2=float(((s * w) ** 2).sum()),
        s2=float(s @ s), max_w=float(w.max()), mass=mass, played=np.bincount(fb.actions, minlength=fb.n_arms) > 0,
        unsupported=unsupported, modified=np.zeros(0, dtype=np.int64),
    )


def _unsupported(fb: BanditFeedback, sp: SparseTarget) -> FloatArray | None:
    """(n,) target mass where the logging distribution is zero, when that distribution is known."""
    if fb.logging_probabilities is None:
        return None
    return sp.per_row(sp.values * (fb.logging_probabilities[sp.rows, sp.arms] <= 0))


def _row_blocks(n: int) -> list[slice]:
    """Consecutive blocks of ``BLOCK_ROWS`` rows covering n rows."""
    return [slice(lo, min(lo + BLOCK_ROWS, n)) for lo in range(0, n, BLOCK_ROWS)]


def _finite_where_eligible(q: FloatArray, eligible: npt.NDArray[np.bool_] | None) -> bool:
    """Whether q̂ (n, K, M) is finite on every eligible (row, arm), block by block (no copy of q̂)."""
    for sl in _row_blocks(q.shape[0]):
        if not np.isfinite(q[sl]).all() and (eligible is None or not np.isfinite(q[sl][eligible[sl]]).all()):
            return False
    return True


def _policy_q(sp: SparseTarget, q: FloatArray) -> FloatArray:
    """(n, M) Σ_a π(a|x) q̂(x, a) over the policy's (eligible) pairs, a block of rows at a time.

    Each block's pairs are spread into a dense (rows, K) matrix and multiplied with q̂'s rows (q̂ off the
    pairs, NaN where an arm is not eligible, is set to 0 first): no (pairs, M) temporaries of the whole log.
    """
    n, k = sp.shape
    out = np.empty((n, q.shape[2]))
    blocks = _row_blocks(n)
    cuts = np.searchsorted(sp.rows, [sl.start for sl in blocks] + [n]).tolist()
    for sl, lo, hi in zip(blocks, cuts[:-1], cuts[1:], strict=True):
        pi = np.zeros((sl.stop - sl.start, k))
        pi[sp.rows[lo:hi] - sl.start, sp.arms[lo:hi]] = sp.values[lo:hi]
        qb = q[sl]
        if not np.isfinite(qb).all():
            qb = np.where((pi != 0)[:, :, None], qb, 0.0)
        out[sl] = np.matmul(pi[:, None, :], qb)[:, 0, :]
    return out


@dataclass(frozen=True, slots=True)
class Shared:
    """A batch's feedback checked once, to prepare many policies on it (each policy's arrays once).

    rewards (n, M) with missing set to 0 · weights (n, M) = sample weight × observed · q (n, K, M) q̂,
    checked finite on the eligible pairs (the only ones read: a checked target keeps only those), or None.
    """

    fb: BanditFeedback
    rewards: FloatArray
    weights: FloatArray
    q: FloatArray | None

    @classmethod
    def of(cls, fb: BanditFeedback, q_hat: npt.ArrayLike | None = None, *, require_observed: bool = True) -> Shared:
        """Check the feedback's rewards and q̂ once.

        A whole log must observe every metric somewhere; one batch of a log need not
        (``require_observed=False``): it adds zeros to that metric's sums, and the merged sums are checked.
        """
        q = None if q_hat is None else _q_shaped(fb, q_hat)
        if q is not None and not _finite_where_eligible(q, fb.eligible):
            raise EstimatorInputError(Q_NOT_FINITE)
        missing = np.isnan(fb.rewards)
        weights = fb.weights[:, None] * ~missing
        if require_observed and (weights.sum(axis=0) == 0).any():
            raise EstimatorInputError("Every metric needs at least one observed (non-NaN) reward.")
        return cls(fb, np.where(missing, 0.0, fb.rewards), weights, q)

    def policy(self, target: npt.ArrayLike | SparseTarget, name: str = "target") -> tuple[Prepared, WeightSums]:
        """One policy's checked arrays and weight sums (``name`` is used in error messages)."""
        fb, q = self.fb, self.q
        sp = _check_target(fb, target, name)
        w = sp.at(fb.actions) / fb.propensities
        unsupported = _unsupported(fb, sp)
        sums = _weight_sums(fb, w, sp.mass(fb.weights), None if unsupported is None else float(fb.weights @ unsupported))
        dm = None if q is None else _policy_q(sp, q)
        return Prepared(w=w, rewards=self.rewards, weights=self.weights, dm=dm,
                        q_logged=None if q is None else q[np.arange(fb.n), fb.actions]), sums

    def batch(self, target: tuple[Prepared, WeightSums], baseline: tuple[Prepared, WeightSums] | None = None) -> Batch:
        """A batch of a target's prepared arrays, and a baseline's for paired estimates."""
        return Batch(self.fb, target[0], None if baseline is None else baseline[0], target[1],
                     None if baseline is None else baseline[1], self.q is not None)


def prepare(
    fb: BanditFeedback, *, target: npt.ArrayLike | SparseTarget, baseline: npt.ArrayLike | SparseTarget | None = None, q_hat: npt.ArrayLike | None = None,
    require_observed: bool = True,
) -> Batch:
    """Validate a batch once and compute what every estimator needs from it (see `Shared.of`)."""
    shared = Shared.of(fb, q_hat, require_observed=require_observed)
    return shared.batch(shared.policy(target), None if baseline is None else shared.policy(baseline, "baseline"))


@dataclass(frozen=True, slots=True)
class Cells:
    """A batch's rows sorted into cells: runs of rows in the same group of every grouping (period × model × task).

    order (n,) row indices cell by cell · bounds (C,) where each cell starts in ``order`` · member (P, C) the group
    of each cell in each of P groupings, groups numbered 0 … n_groups − 1 across groupings. Per-row sums are reduced
    once per cell and the cells added into groups: one pass over the rows instead of one per grouping.
    """

    order: IntArray
    bounds: IntArray
    member: IntArray
    n_groups: int

    @classmethod
    def of(cls, codes: IntArray) -> Cells:
        """Cells of the rows whose group in grouping p is ``codes[p]`` (P, n); no cell is longer than ``CELL_ROWS``."""
        order = np.lexsort(codes[::-1])
        ranked = codes[:, order]
        starts = np.flatnonzero(np.concatenate([[True], (ranked[:, 1:] != ranked[:, :-1]).any(axis=0)]))
        pieces = -(-np.diff(starts, append=order.size) // CELL_ROWS)
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        bounds = np.repeat(starts, pieces) + CELL_ROWS * (np.arange(first.size) - first)
        return cls(order, bounds, ranked[:, bounds], int(codes.max(initial=-1)) + 1)

    def blocks(self, rows: int) -> list[tuple[int, int]]:
        """Consecutive ranges of cells ``(lo, hi)`` of about ``rows`` rows each (at most ``rows`` + ``CELL_ROWS``)."""
        starts = np.searchsorted(self.bounds, np.arange(0, self.order.size, max(rows, 1)))
        cuts = np.unique(np.r_[starts, self.bounds.size]).tolist()
        return list(pairwise(cuts))

    def rows(self, lo: int, hi: int) -> slice:
        """Positions in ``order`` of cells lo … hi − 1."""
        return slice(int(self.bounds[lo]), int(self.bounds[hi]) if hi < self.bounds.size else self.order.size)

    def add(self, per_cell: FloatArray, ufunc: np.ufunc = np.add, fill: float = 0.0) -> FloatArray:
        """Per-group values (..., G) from per-cell ones (..., C): ``ufunc`` over each group's cells."""
        out = np.full(per_cell.shape[:-1] + (self.n_groups,), fill)
        ufunc.at(out, (..., self.member.ravel()), np.tile(per_cell, self.member.shape[0]))
        return out


def group_weight_sums(batch: Batch, target: FloatArray | SparseTarget, cells: Cells) -> list[WeightSums]:
    """The target's `WeightSums` of each group of rows of the value-only ``batch`` prepared with ``target``.

    Equal (to rounding) to `prepare` on each group's rows alone; every sum is reduced per cell, the
    per-arm ones over the target's non-zero pairs.
    """
    if batch.baseline is not None:
        raise ValueError("group_weight_sums takes a batch prepared without a baseline.")
    fb = batch.fb
    sp = target if isinstance(target, SparseTarget) else SparseTarget.of(np.asarray(target, dtype=np.float64))
    per_row = _unsupported(fb, sp)
    s, w = fb.weights, batch.target.w
    sw = s * w
    columns = np.stack([s, sw, s * sw, sw * sw, s * s] + ([] if per_row is None else [s * per_row]))[:, cells.order]
    sums = cells.add(np.add.reduceat(columns, cells.bounds, axis=1))
    max_w = cells.add(np.maximum.reduceat(w[cells.order], cells.bounds), np.maximum, -np.inf)
    n = cells.add(np.diff(cells.bounds, append=fb.n).astype(np.float64))
    cell = np.empty(fb.n, dtype=np.int64)  # the cell of each row
    cell[cells.order] = np.repeat(np.arange(cells.bounds.size), np.diff(cells.bounds, append=fb.n))
    size = cells.bounds.size * fb.n_arms
    mass = np.bincount(cell[sp.rows] * fb.n_arms + sp.arms, weights=s[sp.rows] * sp.values, minlength=size)
    played = np.bincount(cell * fb.n_arms + fb.actions, minlength=size).astype(np.float64)
    mass, played = cells.add(mass.reshape(-1, fb.n_arms).T).T, cells.add(played.reshape(-1, fb.n_arms).T).T > 0
    return [WeightSums(n=int(n[g]), s=float(sums[0, g]), sw=float(sums[1, g]), s2w=float(sums[2, g]), s2w2=float(sums[3, g]),
                       s2=float(sums[4, g]), max_w=float(max_w[g]), mass=mass[g], played=played[g],
                       unsupported=None if per_row is None else float(sums[5, g]), modified=np.zeros(0, dtype=np.int64))
            for g in range(cells.n_groups)]


def with_modified(sums: WeightSums, counts: npt.NDArray[np.int64]) -> WeightSums:
    """The weight sums with the rows each hyperparameter level modifies."""
    return replace(sums, modified=counts)
