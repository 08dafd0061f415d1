"""Off-policy distributions: a target policy's CDF F_π(t) = E_π[1{Y ≤ t}] on a fixed grid, and its quantiles.

Every threshold's indicator 1{Y ≤ t} is a reward, and each estimator is a ratio of weighted sums
F(t) = Σ s a(t) / Σ s c over rows with sample weight s and importance weight w:

- IPS:   a = w 1{y ≤ t},  c = 1
- SNIPS: a = w 1{y ≤ t},  c = w
- DR:    a = Σ_a' π(a'|x) F̂(t|x, a') + w (1{y ≤ t} − F̂(t|x, a_i)),  c = 1, given a distributional outcome
  model's F̂(t|x, a) = q̂ of 1{Y ≤ t}

All sums are mergeable (DESIGN §5): Σ s a, Σ s c and the second moments Σ s² a², Σ s² a c, Σ s² c²
per threshold. For IPS and SNIPS they are cumulative sums of weighted histograms (one bin per grid
interval), O(n) whatever the grid; so are the cross moments of two policies on the same rows, since
1{y ≤ t} 1{y ≤ t'} = 1{y ≤ min(t, t')}. DR's model terms are smooth in t: they are evaluated on every
fourth threshold (`coarse_index`) and interpolated between, its indicator terms are histograms on
every threshold, and its cross moments are kept on the coarse thresholds.

The CDF is projected onto monotone CDFs in [0, 1] (`estimators.grid.monotone`; Huang, Leqi, Lipton &
Azizzadenesheli, "Off-policy risk assessment in contextual bandits", NeurIPS 2021). Its pointwise
standard error is the ratio's delta-method one. The CDF also gets a band that holds at every threshold
at once (`threshold_covariance`, `sup_t_critical`): F̂ ± c·se with c the 1 − α quantile of max_g |Z_g| for a
Gaussian Z with the thresholds' estimated correlation (the sup-t band of Montiel Olea & Plagborg-Møller,
J. Applied Econometrics 2019), narrowed to the monotone envelope a true CDF inside it must keep. It covers
the thresholds with at least `MIN_SIDE` effective observations on each side, min(F̂, 1 − F̂)·m ≥ 20 with m the
normaliser's effective sample size (Σ s c)² / Σ s² c²; beyond them, in the far tails, the normal approximation
fails and the band is not drawn (NaN). tests/unit/test_distribution_band.py measures its coverage. The covariance of two thresholds comes from the same
mergeable sums: for IPS and SNIPS 1{y ≤ t} 1{y ≤ t'} = 1{y ≤ min(t, t')}, so Σ s² a(t) a(t') is ``aa`` at the
smaller threshold; DR keeps the (G, G) matrix (``grid_aa``). A p-quantile's interval is Woodruff's (1952): the
quantiles at p ∓ z·se(F̂(q̂_p)), i.e. the pointwise interval of the CDF inverted. A paired difference
q_π − q_0 of two policies on the same rows gets a normal interval whose variance combines the two
quantiles' Woodruff standard errors (U − L) / 2z with the correlation of F̂_π(q_π) and F̂_0(q_0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError
from estimators.grid import Grid, monotone

__all__ = ["CDF_ESTIMATORS", "LEVELS", "CDFSums", "CrossSums", "Distribution", "PolicyRows", "accumulate_cdfs", "finalize_cdf",
           "quantile_difference", "sup_t_critical", "threshold_covariance"]

FloatArray = npt.NDArray[np.float64]
#: the quantiles a run reports
LEVELS = (0.5, 0.9, 0.95, 0.99)
#: estimators of a CDF (DR only where a distributional outcome model gives F̂)
CDF_ESTIMATORS = ("IPS", "SNIPS", "DR")
#: DR keeps cross moments of two policies on every COARSE-th threshold (and the last)
COARSE = 4
#: the simultaneous band covers thresholds with at least this many effective observations on each side
MIN_SIDE = 20.0


def coarse_index(size: int) -> npt.NDArray[np.int64]:
    """The thresholds DR's cross moments are kept on."""
    return np.unique(np.r_[np.arange(0, size, COARSE), size - 1]).astype(np.int64)


@dataclass(frozen=True, slots=True)
class CDFSums:
    """Mergeable sums of one policy's CDF under one estimator: F(t_g) = num[g] / den.

    num (G,) Σ s a · den Σ s c · aa (G,) Σ s² a² · ac (G,) Σ s² a c · cc Σ s² c² · rows: rows added · grid_aa (G, G)
    Σ s² a(t) a(t') on every pair of thresholds (DR; IPS and SNIPS read it off ``aa``).
    """

    num: FloatArray
    den: float
    aa: FloatArray
    ac: FloatArray
    cc: float
    rows: int
    grid_aa: FloatArray | None = None

    def __add__(self, other: CDFSums) -> CDFSums:
        if self.num.shape != other.num.shape or (self.grid_aa is None) != (other.grid_aa is None):
            raise EstimatorInputError("Only CDF sums on the same grid, of the same estimator, can be merged.")
        grid_aa = None if self.grid_aa is None or other.grid_aa is None else self.grid_aa + other.grid_aa
        return CDFSums(self.num + other.num, self.den + other.den, self.aa + other.aa, self.ac + other.ac, self.cc + other.cc,
                       self.rows + other.rows, grid_aa)


@dataclass(frozen=True, slots=True)
class CrossSums:
    """Cross moments of a target's and a baseline's terms on the same rows, for paired differences.

    aa Σ s² a_π(t) a_0(t'): (G,) as a function of min(t, t') (IPS, SNIPS) or (C, C) on `coarse_index` (DR) ·
    ac (G,) Σ s² a_π(t) c_0 · ca (G,) Σ s² c_π a_0(t') · cc Σ s² c_π c_0.
    """

    aa: FloatArray
    ac: FloatArray
    ca: FloatArray
    cc: float

    def __add__(self, other: CrossSums) -> CrossSums:
        return CrossSums(self.aa + other.aa, self.ac + other.ac, self.ca + other.ca, self.cc + other.cc)

    def at(self, u: float, u0: float) -> tuple[float, float, float]:
        """Σ s² a_π a_0, Σ s² a_π c_0 and Σ s² c_π a_0 at continuous grid positions u (target) and u0 (baseline)."""
        size = self.ac.size
        idx = np.arange(size, dtype=np.float64)
        if self.aa.ndim == 1:
            aa = float(np.interp(min(u, u0), idx, self.aa))
        else:
            coarse = coarse_index(size).astype(np.float64)
            rows = np.array([np.interp(u0, coarse, row) for row in self.aa])
            aa = float(np.interp(u, coarse, rows))
        return aa, float(np.interp(u, idx, self.ac)), float(np.interp(u0, idx, self.ca))


@dataclass(frozen=True, slots=True)
class PolicyRows:
    """One policy on a block of rows: importance weights w (n,), and for DR the per-row Σ_a π F̂(t|x, a) ``dm`` (n, C)
    and F̂(t|x, a_i) at the logged arm ``logged`` (n, C) on the coarse thresholds `coarse_index`, or None."""

    w: FloatArray
    dm: FloatArray | None = None
    logged: FloatArray | None = None


def _cumulative(below: npt.NDArray[np.int64], size: int, values: FloatArray) -> FloatArray:
    """Σ values 1{y ≤ t_g} (G,) from each row's bin ``below`` (`Grid.below`)."""
    return np.cumsum(np.bincount(below, weights=values, minlength=size + 1))[:size]


def _weighted(grid: Grid, below: npt.NDArray[np.int64], s: FloatArray, w: FloatArray, est: str, rows: int) -> CDFSums:
    """IPS or SNIPS sums from weighted histograms."""
    s2w = s * s * w
    num, aa = _cumulative(below, grid.size, s * w), _cumulative(below, grid.size, s2w * w)
    if est == "IPS":
        return CDFSums(num, float(s.sum()), aa, _cumulative(below, grid.size, s2w), float(s @ s), rows)
    return CDFSums(num, float(s @ w), aa, aa, float(s2w @ w), rows)


def _dr(grid: Grid, below: npt.NDArray[np.int64], s: FloatArray, rows: PolicyRows) -> tuple[CDFSums, FloatArray]:
    """DR's sums, and its terms a(t) (n, C) on the coarse thresholds (for cross moments).

    With d(t) = Σ_a π F̂(t|x, a) − w F̂(t|x, a_i) (given on the coarse thresholds) and a = d + w 1{y ≤ t}, the
    indicator's sums are exact on every threshold (histograms) and d's are interpolated between the coarse ones.
    """
    assert rows.dm is not None and rows.logged is not None
    knots, e = coarse_index(grid.size), _interpolation(grid.size)  # e: d on the coarse thresholds → every threshold
    w, s2 = rows.w, s * s
    d = rows.dm - w[:, None] * rows.logged
    ind = below[:, None] <= knots[None, :]
    ww = _cumulative(below, grid.size, s2 * w * w)
    num = e @ (s @ d) + _cumulative(below, grid.size, s * w)
    ac = e @ (s2 @ d) + _cumulative(below, grid.size, s2 * w)
    aa = e @ (s2 @ (d * d)) + 2 * e @ ((s2 * w) @ np.where(ind, d, 0.0)) + ww
    # Σ s² a(t) a(t') on every pair of thresholds; the cross terms Σ s² w d_k 1{y ≤ t_g} are one histogram per coarse one
    d_ind = e @ np.stack([_cumulative(below, grid.size, s2 * w * col) for col in d.T])
    grid_aa = e @ ((d * s2[:, None]).T @ d) @ e.T + d_ind + d_ind.T + _at_min(ww)
    sums = CDFSums(num, float(s.sum()), aa, ac, float(s2.sum()), int(below.size), grid_aa)
    return sums, d + w[:, None] * ind


@functools.cache
def _interpolation(size: int) -> FloatArray:
    """(G, C) the linear map from values on `coarse_index` to every threshold (DR's interpolation, as a matrix)."""
    knots = coarse_index(size)
    return np.stack([np.interp(np.arange(size), knots, col) for col in np.eye(knots.size)], axis=1)


def _at_min(values: FloatArray) -> FloatArray:
    """(G, G) values[min(g, g')]: Σ of an indicator term over two thresholds, 1{y ≤ t} 1{y ≤ t'} = 1{y ≤ min(t, t')}."""
    idx = np.arange(values.size)
    return values[np.minimum.outer(idx, idx)]  # type: ignore[no-any-return]


def accumulate_cdfs(grid: Grid, y: FloatArray, s: FloatArray, policies: dict[str, PolicyRows], *,
                    estimators: tuple[str, ...] = CDF_ESTIMATORS, baseline: str | None = None
                    ) -> tuple[dict[tuple[str, str], CDFSums], dict[tuple[str, str], CrossSums]]:
    """Every policy's CDF sums on a block of rows under each of ``estimators`` (DR only for policies given ``dm``), and
    each policy's cross sums with ``baseline`` (one of ``policies``, or None).

    y (n,) outcomes · s (n,) sample weights.
    """
    below, n = grid.below(y), y.size
    s2 = s * s
    sums: dict[tuple[str, str], CDFSums] = {}
    cross: dict[tuple[str, str], CrossSums] = {}
    terms = {}
    for name, r in policies.items():
        for est in ("IPS", "SNIPS"):
            if est in estimators:
                sums[(name, est)] = _weighted(grid, below, s, r.w, est, n)
        if "DR" in estimators and r.dm is not None:
            sums[(name, "DR")], terms[name] = _dr(grid, below, s, r)
    if baseline is None:
        return sums, cross
    w0 = policies[baseline].w
    for name, r in policies.items():
        if name == baseline:
            continue
        both = _cumulative(below, grid.size, s2 * r.w * w0)
        if "IPS" in estimators:
            cross[(name, "IPS")] = CrossSums(both, sums[(name, "IPS")].ac, sums[(baseline, "IPS")].ac, float(s2.sum()))
        if "SNIPS" in estimators:
            cross[(name, "SNIPS")] = CrossSums(both, both, both, float(s2 @ (r.w * w0)))
        if name in terms and baseline in terms:
            aa = (terms[name] * s2[:, None]).T @ terms[baseline]
            cross[(name, "DR")] = CrossSums(aa, sums[(name, "DR")].ac, sums[(baseline, "DR")].ac, float(s2.sum()))
    return sums, cross


@dataclass(frozen=True, slots=True)
class Distribution:
    """A policy's estimated CDF on ``grid`` and its quantiles at ``levels``.

    cdf, stderr (G,) the monotone CDF and its pointwise standard error; band_low, band_high (G,) its pointwise
    interval at level 1 − alpha · uniform_low, uniform_high (G,) its band at level 1 − alpha at every threshold at
    once (NaN in the far tails, module docstring), F̂ ± critical · se · quantiles, ci_low, ci_high (L,) (NaN: beyond the grid; an open side is ±inf) ·
    positions (L,) the quantiles' continuous grid index · quantile_se (L,) Woodruff's standard error (U − L) / 2z.
    """

    estimator: str
    grid: Grid
    cdf: FloatArray
    stderr: FloatArray
    band_low: FloatArray
    band_high: FloatArray
    levels: tuple[float, ...]
    quantiles: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    positions: FloatArray
    quantile_se: FloatArray
    den: float
    rows: int
    uniform_low: FloatArray
    uniform_high: FloatArray
    critical: float


def finalize_cdf(sums: CDFSums, grid: Grid, *, estimator: str, alpha: float = 0.05, levels: tuple[float, ...] = LEVELS
                 ) -> Distribution:
    """The CDF, its pointwise band and its quantiles with Woodruff intervals from (merged) sums."""
    if not (sums.den > 0 and sums.rows > 1):
        raise EstimatorInputError(f"{estimator}: the CDF's normaliser is {sums.den!r} on {sums.rows} rows (no row with weight).")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    raw = sums.num / sums.den
    cdf = monotone(raw)
    quad = sums.aa - 2 * raw * sums.ac + raw**2 * sums.cc
    quad = np.where(quad > 1e-12 * (sums.aa + raw**2 * sums.cc), quad, 0.0)  # a rounding residue (F = 1) is no variance
    se = np.sqrt(quad * sums.rows / (sums.rows - 1)) / sums.den
    quantiles = np.array([grid.quantile(cdf, p) for p in levels])
    positions = grid.position(quantiles)
    se_at = np.interp(np.nan_to_num(positions), np.arange(grid.size), se)
    low = np.array([grid.quantile(cdf, p - z * e) if p - z * e > 0 else grid.thresholds[0] for p, e in zip(levels, se_at, strict=True)])
    high = np.array([grid.quantile(cdf, p + z * e) for p, e in zip(levels, se_at, strict=True)])
    high = np.where(np.isnan(high) & ~np.isnan(quantiles), np.inf, high)
    size = sums.den**2 / sums.cc if sums.cc > 0 else float(sums.rows)  # the normaliser's effective sample size (Kish)
    inside = np.minimum(cdf, 1 - cdf) * size >= MIN_SIDE
    cov = threshold_covariance(sums)
    critical = max(z, sup_t_critical(cov[np.ix_(inside, inside)], alpha)) if inside.any() else z
    floor = np.maximum.accumulate(np.where(inside, np.clip(cdf - critical * se, 0, 1), 0.0))  # a CDF above the band at t stays above
    ceiling = np.minimum.accumulate(np.where(inside, np.clip(cdf + critical * se, 0, 1), 1.0)[::-1])[::-1]
    uniform_low, uniform_high = np.where(inside, floor, np.nan), np.where(inside, ceiling, np.nan)
    return Distribution(estimator, grid, cdf, se, np.clip(cdf - z * se, 0, 1), np.clip(cdf + z * se, 0, 1), tuple(levels), quantiles,
                        low, high, positions, (high - low) / (2 * z), float(sums.den), sums.rows, uniform_low, uniform_high, critical)


def threshold_covariance(sums: CDFSums) -> FloatArray:
    """The delta-method covariance (G, G) of the raw CDF estimate at every pair of thresholds."""
    raw = sums.num / sums.den
    aa = _at_min(sums.aa) if sums.grid_aa is None else sums.grid_aa
    cov = aa - np.outer(sums.ac, raw) - np.outer(raw, sums.ac) + np.outer(raw, raw) * sums.cc
    return cov * sums.rows / (sums.rows - 1) / sums.den**2  # type: ignore[no-any-return]


def sup_t_critical(cov: FloatArray, alpha: float, *, draws: int = 4_000, seed: int = 0) -> float:
    """The 1 − alpha quantile of max |Z_g| / sd_g for Z ~ N(0, cov), by Monte Carlo with a fixed seed (a run reproduces
    its band); thresholds with no variance (F̂ = 0 or 1 there) are left out."""
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    live = sd > 1e-12 * max(float(sd.max(initial=0.0)), 1e-300)
    if not live.any():
        return 0.0
    corr = cov[np.ix_(live, live)] / np.outer(sd[live], sd[live])
    vals, vecs = np.linalg.eigh((corr + corr.T) / 2)
    root = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T  # the symmetric root: unique, so merge order cannot move it
    z = np.random.default_rng(seed).standard_normal((draws, root.shape[0])) @ root
    return float(np.quantile(np.abs(z).max(axis=1), 1 - alpha))


def quantile_difference(target: Distribution, baseline: Distribution, cross: CrossSums, alpha: float = 0.05
                        ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Paired target − baseline quantiles (L,) with a normal interval (module docstring): both from the same rows."""
    if target.levels != baseline.levels or target.rows != baseline.rows:
        raise EstimatorInputError("Paired quantile differences need both policies on the same rows at the same levels.")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    n = target.rows
    diff, low, high = target.quantiles - baseline.quantiles, np.full(diff_len := len(target.levels), np.nan), np.full(diff_len, np.nan)
    for k, p in enumerate(target.levels):
        u, u0 = target.positions[k], baseline.positions[k]
        if np.isnan(diff[k]):
            continue
        aa, ac, ca = cross.at(u, u0)
        cov = (aa - p * ac - p * ca + p * p * cross.cc) / (target.den * baseline.den) * n / (n - 1)
        se_f = float(np.interp(u, np.arange(target.grid.size), target.stderr))
        se_f0 = float(np.interp(u0, np.arange(baseline.grid.size), baseline.stderr))
        rho = float(np.clip(cov / (se_f * se_f0), -1.0, 1.0)) if se_f > 0 and se_f0 > 0 else 0.0
        s1, s0 = target.quantile_se[k], baseline.quantile_se[k]
        var = s1 * s1 + s0 * s0 - 2 * rho * s1 * s0 if np.isfinite(s1) and np.isfinite(s0) else np.inf
        half = z * np.sqrt(max(var, 0.0))
        low[k], high[k] = diff[k] - half, diff[k] + half
    return diff, low, high
