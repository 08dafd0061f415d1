"""An arm-pooled variance for DR and its kin, kept as mergeable sums, and the interval built on it.

A doubly robust term is ψ_i = DM_i + w̃_i ε_i, ε_i = y_i − q̂(x_i, a_i). Its empirical variance
Σ W² (ψ − θ̂)² sees the residuals of the rows the target weights and nothing else: where a rare, very
long outcome (a stalled first token, a timeout) is missing from those rows, the estimate is low *and*
its standard error small, and the interval misses the truth from below. The arm-pooled variance takes
each arm's residual spread from *every* row logged on that arm, whatever the target does there:

    V_arm = Σ_i W_i² (DM_i − θ̂)² + Σ_k σ̂²_k · Σ_{i: a_i = k} W_i² w̃_i²,
    σ̂²_k = (Σ_{a_i = k} W ε² + m σ̄²) / (Σ_{a_i = k} W + m),   m = 100 pseudo-rows,

σ̂²_k shrunk toward the all-arm spread σ̄² (an arm with few logged rows borrows the others'). It is the
variance of ψ when q̂ is right and an arm's residual spread does not depend on the request. For a paired
difference the same form holds with DM and w̃ replaced by their differences (the per-arm Gram of w̃ below).
`ArmPooled` uses se = √max(V_emp, V_arm) in a normal interval. Measured against the simulator's exact
truth in `docs/experiments/residual_variance.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from estimators.inference import IntervalFit, NormalFit, SkewCorrected, delta_variance
from estimators.reduction import Sums
from estimators.statistic import Statistic

__all__ = ["PRIOR_ROWS", "ArmPooled", "ArmSums"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: pseudo-rows of the all-arm residual spread each arm's spread is shrunk with
PRIOR_ROWS = 100.0


@dataclass(frozen=True, slots=True)
class ArmSums:
    """The sums an arm-pooled variance needs, in the column layout of the statistic's `Sums` (J columns).

    dm: `Sums` of the DM parts of the columns (the constant columns as in the statistic's sums) ·
    gram (K, J, J, M) Σ_{a_i = k} W² w̃_j w̃_l (0 for a constant column) · mass (K, M) Σ_{a_i = k} W ·
    resid (K, M) Σ_{a_i = k} W ε², over the rows logged on arm k.
    """

    dm: Sums
    gram: FloatArray
    mass: FloatArray
    resid: FloatArray

    @classmethod
    def of(cls, dm: FloatArray, w: FloatArray, eps: FloatArray, weights: FloatArray, actions: IntArray, n_arms: int, *,
           pairs: IntArray, constants: FloatArray) -> ArmSums:
        """One batch: dm (M, V, n) and w (V, n) of the V varying columns (term = dm + w ε), eps (M, n), weights W (M, n),
        actions (n,); ``pairs`` and ``constants`` as the statistic's `Sums.of`."""
        m, v, _ = dm.shape
        varying = np.flatnonzero(np.isnan(np.asarray(constants, dtype=np.float64)))
        per_arm = lambda x: np.stack([np.bincount(actions, weights=row, minlength=n_arms) for row in x], axis=-1)
        w2 = weights * weights
        gram = np.zeros((n_arms, len(constants), len(constants), m))
        for a in range(v):
            for b in range(a, v):
                g = per_arm(w2 * (w[a] * w[b]))
                gram[:, varying[a], varying[b]] = gram[:, varying[b], varying[a]] = g
        return cls(dm=Sums.of(dm, weights, pairs=pairs, constants=constants), gram=gram, mass=per_arm(weights),
                   resid=per_arm(weights * eps * eps))

    def __add__(self, other: ArmSums) -> ArmSums:
        return ArmSums(self.dm + other.dm, self.gram + other.gram, self.mass + other.mass, self.resid + other.resid)

    def select(self, columns: IntArray) -> ArmSums:
        """The sums of the columns ``columns`` (J', M) chosen per metric, as `Sums.select`."""
        cols = np.arange(columns.shape[1])
        gram = self.gram[:, columns[:, None, :], columns[None, :, :], cols]
        return ArmSums(self.dm.select(columns, third=False), gram, self.mass, self.resid)

    def block(self, lo: int, hi: int) -> ArmSums:
        """The sums of the contiguous columns lo … hi − 1, as `Sums.block`."""
        return ArmSums(self.dm.block(lo, hi), self.gram[:, lo:hi, lo:hi], self.mass, self.resid)

    def spread(self) -> FloatArray:
        """σ̂²_k (K, M): each arm's mean squared residual, shrunk toward the all-arm one by `PRIOR_ROWS` pseudo-rows."""
        with np.errstate(divide="ignore", invalid="ignore"):
            overall = np.nan_to_num(self.resid.sum(axis=0) / self.mass.sum(axis=0))
        return (self.resid + PRIOR_ROWS * overall) / (self.mass + PRIOR_ROWS)

    def variance(self, gradient: FloatArray, centre: FloatArray, count: FloatArray, total: FloatArray) -> FloatArray:
        """V_arm of the statistic with ``gradient`` (J, M), its columns' means ``centre`` (J, M) the centre of the DM
        parts, with the n / (n − 1) correction and over (Σ W)² as `Sums.variance`; shape (M,)."""
        shift = self.dm.centre - centre                                       # DM's moments moved to the columns' means
        first2 = self.dm.first2
        cov = (self.dm.covariance() + shift[:, None] * first2[None] + shift[None] * first2[:, None]
               + shift[:, None] * shift[None] * self.dm.total2)
        cov = cov + np.einsum("km,kabm->abm", self.spread(), self.gram)
        quad = np.einsum("am,abm,bm->m", gradient, cov, gradient)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.maximum(quad, 0.0) / total**2 * count / (count - 1)


@dataclass(frozen=True, slots=True)
class ArmPooledFit(NormalFit):
    """value ± z · se with se = √max(V_emp, V_arm)."""

    method: ClassVar[str] = "arm-pooled"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmPooled:
    """Normal interval with the larger of the empirical and the arm-pooled variance, for DR and its kin.

    Estimators whose terms are not DM + w̃ ε at one fixed level (IPS, SNIPS, DM, SNDR, a level chosen
    automatically) carry no arm sums: they get the skew-corrected interval, and their estimate's
    ``inference`` says so.
    """

    name: str = "arm-pooled"
    n_boot: int = 0
    seed: int = 0
    arm_sums: ClassVar[bool] = True

    def fit(self, statistic: Statistic, sums: Sums) -> IntervalFit:
        if sums.pooled is None:
            return SkewCorrected().fit(statistic, sums)
        grad = statistic.gradient(sums.means)
        v_emp = delta_variance(statistic, sums)
        v_arm = sums.pooled.variance(grad, sums.centre, sums.count, sums.total)
        return ArmPooledFit(statistic.combine(sums.means), np.sqrt(np.fmax(v_emp, v_arm)))
