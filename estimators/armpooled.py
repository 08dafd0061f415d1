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
`ArmPooled` uses se = √max(V_emp, V_arm) with the Cornish–Fisher quantiles of the studentized estimate
t = (θ̂ − θ)/se in place of ±z. To first order t has mean −c/2 and skewness κ − 3c, with κ the estimate's
skewness and c = cov(θ̂, V̂_arm)/se³; both follow from per-arm moments as V_arm does:

    k3 = Σ W³ (DM − θ̂)³ + 3 Σ W³ (DM − θ̂) w̃² σ̂²_k + Σ_k μ̂3_k Σ_{a_i = k} W³ w̃³,   κ = k3 / k2^{3/2},
    cov = Σ_k (Σ_{a_i = k} W² w̃²) · Cov(Σ W w̃ ε, σ̂²_k),   c = cov / k2^{3/2},

k2 = (Σ W)² V_arm without the n / (n − 1), μ̂3_k each arm's mean cubed residual shrunk as σ̂²_k (Cov(W w̃ ε, W ε²)
= W² w̃ μ3). The interval [θ̂ − se · t(z), θ̂ − se · t(−z)], t(u) = −c/2 + u + (κ − 3c)(u² − 1)/6, is exactly as
wide as θ̂ ± z · se, moved where t's skew puts the truth: a sample that caught fewer stalled requests than
expected gives a low estimate and a low arm spread together, so t has a long lower tail and the interval moves up
(the move is held within ± z · se: `ArmPooledFit`). Measured against the simulator's exact truth in
`docs/experiments/residual_variance.md` (the spread) and `docs/experiments/conditional_variance.md` (the quantiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement, permutations
from statistics import NormalDist
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from estimators.inference import IntervalFit, SkewCorrected, check_alpha
from estimators.reduction import Sums
from estimators.statistic import Statistic

__all__ = ["PRIOR_ROWS", "ArmPooled", "ArmSums"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: pseudo-rows of the all-arm residual spread each arm's spread is shrunk with
PRIOR_ROWS = 100.0


def _shrunk(sums: FloatArray, mass: FloatArray) -> FloatArray:
    """Each arm's mean (K, M) of what ``sums`` (K, M) add up, shrunk toward the all-arm mean by `PRIOR_ROWS` pseudo-rows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        overall = np.nan_to_num(sums.sum(axis=0) / mass.sum(axis=0))
    return (sums + PRIOR_ROWS * overall) / (mass + PRIOR_ROWS)


def _symmetric(out: FloatArray, index: tuple[int, ...], value: FloatArray) -> None:
    """Write ``value`` (K, M) at every permutation of the column ``index`` of ``out`` (K, J, …, J, M)."""
    for perm in set(permutations(index)):
        out[(slice(None), *perm)] = value


@dataclass(frozen=True, slots=True)
class ArmSums:
    """The sums an arm-pooled variance and its Cornish–Fisher quantiles need, in the column layout of the statistic's
    `Sums` (J columns), each over the rows logged on arm k.

    dm: `Sums` of the DM parts of the columns (the constant columns as in the statistic's sums), with their third
    moments · mass (K, M) Σ W · resid (K, M) Σ W ε² · resid3 (K, M) Σ W ε³ · lin (K, J, M) Σ W² w̃_j ·
    gram (K, J, J, M) Σ W² w̃_j w̃_l · gram3 (K, J, J, M) Σ W³ w̃_j w̃_l · cube (K, J, J, J, M) Σ W³ w̃_a w̃_b w̃_c ·
    mixed (K, J, J, J, M) Σ W³ DM_a w̃_b w̃_c (DM uncentred; it is moved to the statistic's centre with gram3).
    w̃ is 0 for a constant column.
    """

    dm: Sums
    mass: FloatArray
    resid: FloatArray
    resid3: FloatArray
    lin: FloatArray
    gram: FloatArray
    gram3: FloatArray
    cube: FloatArray
    mixed: FloatArray

    @classmethod
    def of(cls, dm: FloatArray, w: FloatArray, eps: FloatArray, weights: FloatArray, actions: IntArray, n_arms: int, *,
           pairs: IntArray, constants: FloatArray) -> ArmSums:
        """One batch: dm (M, V, n) and w (V, n) of the V varying columns (term = dm + w ε), eps (M, n), weights W (M, n),
        actions (n,); ``pairs`` and ``constants`` as the statistic's `Sums.of`."""
        m, v, _ = dm.shape
        const = np.asarray(constants, dtype=np.float64)
        j = const.size
        col = np.flatnonzero(np.isnan(const))
        per_arm = lambda x: np.stack([np.bincount(actions, weights=row, minlength=n_arms) for row in x], axis=-1)
        w2 = weights * weights
        w3 = w2 * weights
        lin, gram, gram3 = np.zeros((n_arms, j, m)), np.zeros((n_arms, j, j, m)), np.zeros((n_arms, j, j, m))
        cube, mixed = np.zeros((n_arms, j, j, j, m)), np.zeros((n_arms, j, j, j, m))
        for a in range(v):
            lin[:, col[a]] = per_arm(w2 * w[a])
        for a, b in combinations_with_replacement(range(v), 2):
            _symmetric(gram, (col[a], col[b]), per_arm(w2 * (w[a] * w[b])))
            _symmetric(gram3, (col[a], col[b]), per_arm(w3 * (w[a] * w[b])))
            for d in range(v):
                mixed[:, col[d], col[a], col[b]] = mixed[:, col[d], col[b], col[a]] = per_arm(w3 * dm[:, d] * (w[a] * w[b]))
        for a, b, c in combinations_with_replacement(range(v), 3):
            _symmetric(cube, (col[a], col[b], col[c]), per_arm(w3 * (w[a] * w[b] * w[c])))
        for d in np.flatnonzero(~np.isnan(const)):                            # a constant DM times Σ W³ w̃_b w̃_c
            mixed[:, d] = const[d] * gram3
        units = np.array([[0, j]], dtype=np.int64)
        return cls(dm=Sums.of(dm, weights, pairs=pairs, constants=constants, units=units), mass=per_arm(weights),
                   resid=per_arm(weights * eps * eps), resid3=per_arm(weights * eps**3), lin=lin, gram=gram, gram3=gram3,
                   cube=cube, mixed=mixed)

    def __add__(self, other: ArmSums) -> ArmSums:
        return ArmSums(self.dm + other.dm, *(getattr(self, f) + getattr(other, f) for f in self.__slots__[1:]))

    def select(self, columns: IntArray) -> ArmSums:
        """The sums of the columns ``columns`` (J', M) chosen per metric, as `Sums.select`."""
        cols = np.arange(columns.shape[1])
        c1, c2, c3 = columns[:, None, None, :], columns[None, :, None, :], columns[None, None, :, :]
        return ArmSums(self.dm.select(columns), self.mass, self.resid, self.resid3, self.lin[:, columns, cols],
                       self.gram[:, columns[:, None, :], columns[None, :, :], cols],
                       self.gram3[:, columns[:, None, :], columns[None, :, :], cols],
                       self.cube[:, c1, c2, c3, cols], self.mixed[:, c1, c2, c3, cols])

    def block(self, lo: int, hi: int) -> ArmSums:
        """The sums of the contiguous columns lo … hi − 1, as `Sums.block`."""
        s = slice(lo, hi)
        return ArmSums(self.dm.block(lo, hi), self.mass, self.resid, self.resid3, self.lin[:, s], self.gram[:, s, s],
                       self.gram3[:, s, s], self.cube[:, s, s, s], self.mixed[:, s, s, s])

    def spread(self) -> FloatArray:
        """σ̂²_k (K, M): each arm's mean squared residual, shrunk toward the all-arm one by `PRIOR_ROWS` pseudo-rows."""
        return _shrunk(self.resid, self.mass)

    def moments(self, gradient: FloatArray, centre: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """k2, k3 and cov (each (M,)) of the statistic with ``gradient`` (J, M) and columns' means ``centre`` (J, M),
        under the arm-pooled model: V_arm = k2 / (Σ W)² · n / (n − 1), κ = k3 / k2^{3/2}, c = cov / k2^{3/2}."""
        assert self.dm.third is not None
        g, shift = gradient, self.dm.centre - centre                          # DM's moments moved to the columns' means
        first2 = self.dm.first2
        cov2 = (self.dm.covariance() + shift[:, None] * first2[None] + shift[None] * first2[:, None]
                + shift[:, None] * shift[None] * self.dm.total2)
        on_arm = lambda x: np.einsum("am,bm,kabm->km", g, g, x)
        cubed = lambda x: np.einsum("am,bm,cm,kabcm->km", g, g, g, x)
        gram, gram3, lin = on_arm(self.gram), on_arm(self.gram3), np.einsum("am,kam->km", g, self.lin)
        mixed = cubed(self.mixed) - (g * centre).sum(axis=0) * gram3          # Σ W³ g'(DM − centre) (g'w̃)²
        s2, s3 = self.spread(), _shrunk(self.resid3, self.mass)
        k2 = np.einsum("am,abm,bm->m", g, cov2, g) + (s2 * gram).sum(axis=0)
        k3 = self.dm.third.moved(shift).cubed(g) + 3 * (s2 * mixed).sum(axis=0) + (s3 * cubed(self.cube)).sum(axis=0)
        own = self.mass + PRIOR_ROWS
        cov = ((gram * lin * s3 / own).sum(axis=0)
               + (gram * PRIOR_ROWS / own).sum(axis=0) * (lin * s3).sum(axis=0) / self.mass.sum(axis=0))
        return k2, k3, cov


@dataclass(frozen=True, slots=True)
class ArmPooledFit:
    """[θ̂ − se · t(z), θ̂ − se · t(−z)], t(u) = −c/2 + u + skew · (u² − 1)/6: the Cornish–Fisher quantiles of a
    studentized estimate with mean −c/2 and skewness ``skew`` = κ − 3c; as wide as θ̂ ± z · se.

    The move, se · (t(z) − z), is held within ± z · se so that the estimate stays inside its own interval: a skewness
    that large (a few rows carrying most of the weight) is outside the expansion's reach."""

    value: FloatArray
    stderr: FloatArray
    bias: FloatArray
    skew: FloatArray
    method: ClassVar[str] = "arm-pooled"

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        check_alpha(alpha)
        z = NormalDist().inv_cdf(1 - alpha / 2)
        move = np.clip(-self.bias / 2 + self.skew * (z * z - 1) / 6, -z, z)
        return self.value - self.stderr * (z + move), self.value + self.stderr * (z - move)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmPooled:
    """The larger of the empirical and the arm-pooled variance, with Cornish–Fisher quantiles, for DR and its kin.

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
        k2, k3, cov = sums.pooled.moments(grad, sums.centre)
        n = sums.count
        with np.errstate(divide="ignore", invalid="ignore"):
            v_arm = np.maximum(k2, 0.0) / sums.total**2 * n / (n - 1)       # with the n / (n − 1) of `Sums.variance`
            scale = np.where(k2 > 0, np.maximum(k2, 0.0) ** -1.5, 0.0)
        kappa, c = np.nan_to_num(k3 * scale), np.nan_to_num(cov * scale)
        se = np.sqrt(np.fmax(sums.variance(grad), v_arm))                 # the empirical (delta-method) variance
        return ArmPooledFit(statistic.combine(sums.means), se, c, kappa - 3 * c)
