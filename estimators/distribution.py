"""Off-policy distributions: a target policy's CDF F_π(t) = E_π[1{Y ≤ t}] on a fixed grid, and its quantiles.

Every threshold's indicator 1{Y ≤ t} is a reward, so each estimator is the usual one, held in
mergeable sums (DESIGN §5) over rows with sample weight s and importance weight w:

- IPS:   F(t) = Σ s w 1{y ≤ t} / Σ s
- SNIPS: F(t) = Σ s w 1{y ≤ t} / Σ s w
- DR:    F(t) = Σ s [Σ_a π(a|x) F̂(t|x, a) + w (1{y ≤ t} − F̂(t|x, a_i))] / Σ s, given a distributional outcome model's
  F̂(t|x, a) = q̂ of 1{Y ≤ t}

The IPS/SNIPS numerators are cumulative sums of a weighted histogram (one bin per grid interval),
so they cost O(n) whatever the grid. Bootstrap replicates use the same keyed Poisson(1) multipliers
as every other interval (`estimators.resample`): sums over replicates add across batches too. The
estimated CDF is projected onto monotone CDFs (`estimators.grid.monotone`); quantiles p50 … p99 get
percentile intervals from the replicates' quantiles, paired differences from the replicate-wise
differences of two policies on the same rows, and the CDF a uniform band from the replicates'
largest deviation. Reference: Huang, Leqi, Lipton & Azizzadenesheli, "Off-policy risk assessment in
contextual bandits", NeurIPS 2021 (IPS/DR CDF estimators and their monotone projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError
from estimators.grid import Grid, monotone

__all__ = ["CDF_ESTIMATORS", "LEVELS", "CDFSums", "Distribution", "PolicyRows", "accumulate_cdfs", "finalize_cdf",
           "quantile_difference"]

FloatArray = npt.NDArray[np.float64]
#: the quantiles a run reports
LEVELS = (0.5, 0.9, 0.95, 0.99)
#: estimators of a CDF (DR only where a distributional outcome model gives F̂)
CDF_ESTIMATORS = ("IPS", "SNIPS", "DR")


@dataclass(frozen=True, slots=True)
class CDFSums:
    """Mergeable sums of one policy's CDF under one estimator: F(t_g) = num[g] / den.

    num (G,) · den () · boot_num (B, G) and boot_den (B,) the same sums with each row's Poisson multiplier (B = 0:
    no bootstrap) · rows: how many rows were added.
    """

    num: FloatArray
    den: float
    boot_num: FloatArray
    boot_den: FloatArray
    rows: int

    def __add__(self, other: CDFSums) -> CDFSums:
        if self.num.shape != other.num.shape or self.boot_num.shape != other.boot_num.shape:
            raise EstimatorInputError("Only CDF sums on the same grid with the same bootstrap can be merged.")
        return CDFSums(self.num + other.num, self.den + other.den, self.boot_num + other.boot_num,
                       self.boot_den + other.boot_den, self.rows + other.rows)


@dataclass(frozen=True, slots=True)
class PolicyRows:
    """One policy on a block of rows: importance weights w (n,), and for DR the per-row Σ_a π F̂(t|x, a) ``dm`` (n, G)
    and F̂(t|x, a_i) at the logged arm ``logged`` (n, G), or None."""

    w: FloatArray
    dm: FloatArray | None = None
    logged: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class _Bins:
    """Rows sorted by their grid bin once per block: per-bin sums of any row values, with or without multipliers."""

    below: npt.NDArray[np.int64]
    size: int
    order: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    ranked: FloatArray | None  # (B, n) multipliers in bin order

    @classmethod
    def of(cls, below: npt.NDArray[np.int64], size: int, multipliers: FloatArray | None) -> _Bins:
        order = np.argsort(below, kind="stable")
        ranked = below[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]]) if ranked.size else np.zeros(0, dtype=np.int64)
        boot = None if multipliers is None or multipliers.shape[0] == 0 else multipliers[:, order]
        return cls(below, size, order, starts, boot)

    def cumulative(self, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Σ values 1{y ≤ t_g} (G,) and the same with multipliers (B, G)."""
        hist = np.bincount(self.below, weights=values, minlength=self.size + 1)
        if self.ranked is None:
            return np.cumsum(hist)[: self.size], np.zeros((0, self.size))
        boot = np.zeros((self.ranked.shape[0], self.size + 1))
        if self.starts.size:
            boot[:, self.below[self.order][self.starts]] = np.add.reduceat(self.ranked * values[self.order], self.starts, axis=1)
        return np.cumsum(hist)[: self.size], np.cumsum(boot, axis=1)[:, : self.size]


def accumulate_cdfs(grid: Grid, y: FloatArray, s: FloatArray, policies: dict[str, PolicyRows], *,
                    estimators: tuple[str, ...] = CDF_ESTIMATORS, multipliers: FloatArray | None = None
                    ) -> dict[tuple[str, str], CDFSums]:
    """Every policy's CDF sums on a block of rows under each of ``estimators`` (DR only for policies given ``dm``).

    y (n,) outcomes · s (n,) sample weights · multipliers (B, n) the rows' Poisson(1) multipliers, or None.
    """
    below = grid.below(y)
    bins = _Bins.of(below, grid.size, multipliers) if {"IPS", "SNIPS"} & set(estimators) else None
    n_boot = 0 if multipliers is None else multipliers.shape[0]
    boot_s = np.zeros(0) if multipliers is None else multipliers @ s
    out: dict[tuple[str, str], CDFSums] = {}
    for name, rows in policies.items():
        sw = s * rows.w
        if bins is not None:
            num, boot = bins.cumulative(sw)
            if "IPS" in estimators:
                out[(name, "IPS")] = CDFSums(num, float(s.sum()), boot, boot_s, y.size)
            if "SNIPS" in estimators:
                boot_sw = np.zeros(0) if multipliers is None else multipliers @ sw
                out[(name, "SNIPS")] = CDFSums(num, float(sw.sum()), boot, boot_sw, y.size)
        if "DR" in estimators and rows.dm is not None and rows.logged is not None:
            x = rows.dm + rows.w[:, None] * ((below[:, None] <= np.arange(grid.size)[None, :]) - rows.logged)
            sx = s[:, None] * x
            boot = np.zeros((0, grid.size)) if multipliers is None else multipliers @ sx
            out[(name, "DR")] = CDFSums(sx.sum(axis=0), float(s.sum()), boot, boot_s, y.size)
    assert n_boot == boot_s.size
    return out


@dataclass(frozen=True, slots=True)
class Distribution:
    """A policy's estimated CDF on ``grid`` and its quantiles at ``levels``.

    cdf, band_low, band_high (G,): the monotone CDF and a uniform band at level 1 − alpha · quantiles, ci_low,
    ci_high (L,) · replicates (B, L) the bootstrap replicates' quantiles (for paired differences; NaN: beyond the grid).
    """

    estimator: str
    grid: Grid
    cdf: FloatArray
    band_low: FloatArray
    band_high: FloatArray
    levels: tuple[float, ...]
    quantiles: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    replicates: FloatArray
    rows: int


def _percentiles(replicates: FloatArray, alpha: float) -> tuple[FloatArray, FloatArray]:
    """Percentile interval per column of (B, L) replicates; a replicate beyond the grid (NaN) counts as +inf."""
    if replicates.shape[0] < 2:
        nan = np.full(replicates.shape[1], np.nan)
        return nan, nan
    reps = np.where(np.isnan(replicates), np.inf, replicates)
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def finalize_cdf(sums: CDFSums, grid: Grid, *, estimator: str, alpha: float = 0.05, levels: tuple[float, ...] = LEVELS
                 ) -> Distribution:
    """The CDF, its band and its quantiles with percentile intervals from (merged) sums."""
    if not sums.den > 0:
        raise EstimatorInputError(f"{estimator}: the CDF's normaliser is {sums.den!r} (no row with weight).")
    cdf = monotone(sums.num / sums.den)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = monotone(sums.boot_num / sums.boot_den[:, None]) if sums.boot_den.size else np.zeros((0, grid.size))
    band = float(np.quantile(np.abs(boot - cdf).max(axis=1), 1 - alpha)) if boot.shape[0] >= 2 else np.nan
    quantiles = np.array([grid.quantile(cdf, p) for p in levels])
    replicates = np.stack([grid.quantile(boot, p) for p in levels], axis=-1) if boot.shape[0] else np.zeros((0, len(levels)))
    low, high = _percentiles(replicates, alpha)
    return Distribution(estimator, grid, cdf, np.clip(cdf - band, 0, 1), np.clip(cdf + band, 0, 1), tuple(levels), quantiles,
                        low, high, replicates, sums.rows)


def quantile_difference(target: Distribution, baseline: Distribution, alpha: float = 0.05
                        ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Paired target − baseline quantiles (L,) and their percentile interval from replicate-wise differences.

    Both must come from the same rows and the same multipliers (the same keys, seed and B), as a run's are.
    """
    if target.replicates.shape != baseline.replicates.shape or target.levels != baseline.levels:
        raise EstimatorInputError("Paired quantile differences need both policies' replicates at the same levels.")
    diff = target.replicates - baseline.replicates
    low, high = _percentiles(diff, alpha) if diff.shape[0] >= 2 else (np.full(diff.shape[1], np.nan),) * 2
    both = np.isnan(target.replicates) | np.isnan(baseline.replicates)
    if diff.shape[0] >= 2:   # a replicate beyond the grid on either side leaves that side of the interval open
        open_low = both.mean(axis=0) > alpha / 2
        low, high = np.where(open_low, -np.inf, low), np.where(open_low, np.inf, high)
    return target.quantiles - baseline.quantiles, low, high
