"""One validated batch of rows with its policies' importance weights: prepared once, shared by every estimator."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError, EstimatorSupportError
from estimators.diagnostics import WeightSums
from estimators.feedback import BanditFeedback

__all__ = ["Prepared", "Batch", "prepare", "split"]

FloatArray = npt.NDArray[np.float64]
ROW_SUM_TOL = 1e-6
SPREAD_CELLS = 1 << 22  # bound on the (groups, n) matrix `split` multiplies π by


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


def _check_target(fb: BanditFeedback, target: npt.ArrayLike, name: str) -> FloatArray:
    pi = np.asarray(target, dtype=np.float64)
    if pi.shape != (fb.n, fb.n_arms):
        msg = f"{name} must have shape (n, K) = {(fb.n, fb.n_arms)}. Got {pi.shape}."
        raise EstimatorInputError(msg)
    sums = pi.sum(axis=1)  # finite row sums mean finite entries (else overflow: check them one by one)
    finite = bool(np.isfinite(sums).all()) or bool(np.isfinite(pi).all())
    if not finite or (pi.size and pi.min() < -1e-12):
        raise EstimatorInputError(f"{name} must hold finite, non-negative probabilities.")
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        rows = np.flatnonzero(off)[:5].tolist()
        msg = f"{name} rows must sum to 1. {int(off.sum())} rows do not (first rows {rows}: sums {sums[rows].tolist()})."
        raise EstimatorInputError(msg)
    if fb.eligible is not None:
        # only rows with some positive mass off the eligible set can exceed the tolerance: sum those alone
        off_set = pi > 0
        np.greater(off_set, fb.eligible, out=off_set)  # positive and not eligible
        suspect = np.flatnonzero(off_set.any(axis=1))
        outside = np.zeros(fb.n, dtype=bool)
        outside[suspect] = np.einsum("nk,nk->n", pi[suspect], ~fb.eligible[suspect]) > 1e-9
        if outside.any():
            rows = np.flatnonzero(outside)[:5].tolist()
            msg = f"{name} puts probability outside the eligible set on {int(outside.sum())} rows (first rows {rows})."
            raise EstimatorSupportError(msg)
    return pi


def _check_q_hat(fb: BanditFeedback, q_hat: npt.ArrayLike) -> FloatArray:
    q = np.asarray(q_hat, dtype=np.float64)
    if fb.scalar and q.ndim == 2:
        q = q[:, :, None]
    want = (fb.n, fb.n_arms, fb.n_metrics)
    if q.shape != want:
        shown = want[:2] if fb.scalar else want
        msg = f"q_hat must have shape {shown} to match the feedback. Got {np.asarray(q_hat).shape}."
        raise EstimatorInputError(msg)
    if np.isfinite(q).all():
        return q  # the target is 0 off the eligible set and logged arms are eligible: nothing to zero
    usable = np.ones(q.shape[:2], dtype=bool) if fb.eligible is None else fb.eligible
    if not np.isfinite(q[usable]).all():
        raise EstimatorInputError("q_hat must be finite on every eligible (row, arm).")
    return np.where(usable[:, :, None], q, 0.0)


def _weight_sums(fb: BanditFeedback, w: FloatArray, mass: FloatArray, unsupported: float | None) -> WeightSums:
    """The target's `WeightSums` on the rows of ``fb`` from its weights ``w`` and its mass Σ s π (K,)."""
    s = fb.weights
    return WeightSums(
        n=fb.n, s=float(s.sum()), sw=float(s @ w), s2w=float((s * s) @ w), s2w2=float(((s * w) ** 2).sum()),
        s2=float(s @ s), max_w=float(w.max()), mass=mass, played=np.bincount(fb.actions, minlength=fb.n_arms) > 0,
        unsupported=unsupported, modified=np.zeros(0, dtype=np.int64),
    )


def _unsupported(fb: BanditFeedback, pi: FloatArray) -> FloatArray | None:
    """(n,) target mass where the logging distribution is zero, when that distribution is known."""
    return None if fb.logging_probabilities is None else (pi * (fb.logging_probabilities <= 0)).sum(axis=1)


def _policy(fb: BanditFeedback, target: npt.ArrayLike, name: str, q: FloatArray | None, rewards: FloatArray,
            weights: FloatArray) -> tuple[Prepared, WeightSums]:
    pi = _check_target(fb, target, name)
    rows = np.arange(fb.n)
    w = pi[rows, fb.actions] / fb.propensities
    dm = None if q is None else np.einsum("nk,nkm->nm", pi, q)
    q_logged = None if q is None else q[rows, fb.actions]
    unsupported = _unsupported(fb, pi)
    sums = _weight_sums(fb, w, fb.weights @ pi, None if unsupported is None else float(fb.weights @ unsupported))
    return Prepared(w=w, rewards=rewards, weights=weights, dm=dm, q_logged=q_logged), sums


def prepare(
    fb: BanditFeedback, *, target: npt.ArrayLike, baseline: npt.ArrayLike | None = None, q_hat: npt.ArrayLike | None = None,
    require_observed: bool = True,
) -> Batch:
    """Validate a batch once and compute what every estimator needs from it.

    A whole log must observe every metric somewhere; one batch of a log need not
    (``require_observed=False``): it adds zeros to that metric's sums, and the merged sums are checked.
    """
    q = None if q_hat is None else _check_q_hat(fb, q_hat)
    missing = np.isnan(fb.rewards)
    weights = fb.weights[:, None] * ~missing
    if require_observed and (weights.sum(axis=0) == 0).any():
        raise EstimatorInputError("Every metric needs at least one observed (non-NaN) reward.")
    rewards = np.where(missing, 0.0, fb.rewards)
    t, t_sums = _policy(fb, target, "target", q, rewards, weights)
    b = b_sums = None
    if baseline is not None:
        b, b_sums = _policy(fb, baseline, "baseline", q, rewards, weights)
    return Batch(fb, t, b, t_sums, b_sums, q is not None)


def split(batch: Batch, target: FloatArray, groups: list[npt.NDArray[np.int64]], parts: list[BanditFeedback]) -> list[Batch]:
    """The value-only ``batch`` (prepared with ``target``) on each group of rows, as `prepare` builds it on them.

    ``groups`` hold ascending row indices (they may overlap) and ``parts[g]`` is ``batch.fb.subset(groups[g])``.
    Every per-row array is cut from the whole batch's, so the target is checked once per batch rather than
    once per group; the per-group masses Σ s π of all groups come from one product.
    """
    if batch.baseline is not None:
        raise ValueError("split takes a batch prepared without a baseline.")
    fb = batch.fb
    per_row = _unsupported(fb, target)
    mass = np.empty((len(groups), fb.n_arms))
    unsupported = None if per_row is None else np.empty(len(groups))
    step = max(1, SPREAD_CELLS // fb.n)
    for start in range(0, len(groups), step):  # (groups, n) row weights of a few groups at a time, times π
        spread = np.zeros((len(groups[start : start + step]), fb.n))
        for g, rows in enumerate(groups[start : start + step]):
            spread[g, rows] = fb.weights[rows]
        mass[start : start + step] = spread @ target
        if unsupported is not None and per_row is not None:
            unsupported[start : start + step] = spread @ per_row
    out = []
    for g, (rows, part) in enumerate(zip(groups, parts, strict=True)):
        prep = batch.target.rows(rows)
        sums = _weight_sums(part, prep.w, mass[g], None if unsupported is None else float(unsupported[g]))
        out.append(Batch(part, prep, None, sums, None, batch.has_q_hat))
    return out


def with_modified(sums: WeightSums, counts: npt.NDArray[np.int64]) -> WeightSums:
    """The weight sums with the rows each hyperparameter level modifies."""
    return replace(sums, modified=counts)
