"""A fixed grid of thresholds for off-policy CDFs, monotone projection of estimated CDFs, and quantiles from them.

A CDF estimated on a grid t_1 < … < t_G (`estimators.distribution`) is a vector F(t_g); a quantile
q_p = inf{t : F(t) ≥ p} is read off it by linear interpolation between the two grid points around
p, in log t (the grids are log-spaced; a first threshold at 0 holds a point mass at zero, e.g. the
throughput of failed requests, and is interpolated linearly in t).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import isotonic_regression

from estimators._errors import EstimatorInputError

__all__ = ["Grid", "monotone"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Grid:
    """Thresholds t (G,), strictly increasing, all > 0 except possibly the first (= 0).

    >>> Grid.spanning(1.0, 100.0, points=3).thresholds.tolist()
    [1.0, 10.0, 100.0]
    """

    thresholds: FloatArray

    def __post_init__(self) -> None:
        t = np.asarray(self.thresholds, dtype=np.float64)
        if t.ndim != 1 or t.size < 2 or not np.isfinite(t).all() or (np.diff(t) <= 0).any() or t[0] < 0 or (t[1:] <= 0).any():
            raise EstimatorInputError(f"A grid needs at least 2 finite, strictly increasing thresholds >= 0. Got {t.tolist()[:5]}...")
        object.__setattr__(self, "thresholds", t)

    @classmethod
    def spanning(cls, low: float, high: float, *, points: int = 128, zero: bool = False) -> Grid:
        """``points`` thresholds log-spaced from ``low`` > 0 to ``high`` (with ``zero``: 0, then points − 1 of them).

        A range of one value (``low == high`` up to a relative 1e-6) is widened to [low / 2, 2 · high].
        """
        if not (np.isfinite(low) and np.isfinite(high) and 0 < low <= high):
            raise EstimatorInputError(f"A grid spans 0 < low <= high. Got low={low!r}, high={high!r}.")
        if high <= low * (1 + 1e-6):   # one value (up to rounding): a grid around it
            low, high = low / 2, high * 2
        spaced = np.geomspace(low, high, points - 1 if zero else points)
        spaced[-1] = high  # exactly the largest value: every logged value lies at or below the last threshold
        return cls(np.concatenate([[0.0], spaced]) if zero else spaced)

    @property
    def size(self) -> int:
        """G, the number of thresholds."""
        return int(self.thresholds.size)

    def below(self, y: FloatArray) -> IntArray:
        """(n,) for each value, the index of the first threshold ≥ it (G when above all): y ≤ t_g exactly when g ≥ below."""
        return np.searchsorted(self.thresholds, np.asarray(y, dtype=np.float64), side="left").astype(np.int64)

    def indicators(self, y: FloatArray) -> FloatArray:
        """(n, G) 1{y_i ≤ t_g}."""
        return (self.below(y)[:, None] <= np.arange(self.size)[None, :]).astype(np.float64)

    def position(self, t: FloatArray) -> FloatArray:
        """The continuous grid index of values ``t`` (log-linear between thresholds, linear from a threshold at 0),
        clamped to [0, G − 1]; NaN stays NaN."""
        t = np.asarray(t, dtype=np.float64)
        idx = np.arange(self.size, dtype=np.float64)
        pos = self.thresholds > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            logged = np.interp(np.log(np.where(t > 0, t, 1.0)), np.log(self.thresholds[pos]), idx[pos])
        first = self.thresholds[pos][0]
        below = np.where(self.thresholds[0] == 0, np.clip(t / first, 0.0, 1.0) * idx[pos][0], 0.0)
        return np.where(np.isnan(t), np.nan, np.where(t >= first, logged, below))

    def quantile(self, cdf: FloatArray, p: float) -> FloatArray:
        """The p-quantile of each CDF (..., G) (non-decreasing along the last axis): NaN where F(t_G) < p.

        Between the grid points around p the CDF is interpolated linearly in log t (in t on a segment from 0).
        """
        cdf = np.asarray(cdf, dtype=np.float64)
        t = self.thresholds
        idx = np.sum(cdf < p, axis=-1)                                  # first grid point with F ≥ p
        hi = np.minimum(idx, self.size - 1)
        lo = np.maximum(hi - 1, 0)
        f_hi = np.take_along_axis(cdf, hi[..., None], axis=-1)[..., 0]
        f_lo = np.take_along_axis(cdf, lo[..., None], axis=-1)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip(np.where(f_hi > f_lo, (p - f_lo) / (f_hi - f_lo), 1.0), 0.0, 1.0)
            t_lo, t_hi = t[lo], t[hi]
            in_log = np.exp(np.log(np.where(t_lo > 0, t_lo, 1.0)) * (1 - frac) + np.log(t_hi) * frac)
        value = np.where(t_lo > 0, in_log, t_lo + frac * (t_hi - t_lo))
        value = np.where(idx == 0, t[0], value)
        return np.where(idx >= self.size, np.nan, value)


def monotone(cdf: FloatArray) -> FloatArray:
    """Each row of ``cdf`` (..., G) projected onto non-decreasing vectors in [0, 1] (least squares: isotonic regression,
    then clipping, which keeps it the projection). Rows already monotone are only clipped."""
    f = np.array(cdf, dtype=np.float64)
    flat = f.reshape(-1, f.shape[-1])
    bad = np.flatnonzero((np.diff(flat, axis=-1) < 0).any(axis=-1) & np.isfinite(flat).all(axis=-1))
    for r in bad.tolist():
        flat[r] = isotonic_regression(flat[r]).x
    return np.clip(flat.reshape(f.shape), 0.0, 1.0)
