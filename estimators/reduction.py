"""Mergeable sufficient statistics: every estimate and interval from sums over rows.

An estimator turns each row into J columns X (per metric) and a weight W; everything it reports is
a function of these sums, so a log can be evaluated whole, batch by batch, or on many workers whose
`Sums` are added — the same numbers every way (DESIGN §5). Second moments are kept only for the
column pairs a statistic needs (a tuned estimator's many candidates need not be crossed with each
other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from estimators.resample import poisson_weight_sums

__all__ = ["Sums", "all_pairs"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def all_pairs(j: int) -> IntArray:
    """Every pair (a, b) with a ≤ b of j columns, shape (P, 2)."""
    a, b = np.triu_indices(j)
    return np.stack([a, b], axis=1).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Sums:
    """Sums over rows of X (J, M per row) weighted by W (M per row).

    count (M,) rows with W > 0 · total (M,) Σ W · total2 (M,) Σ W² · first (J, M) Σ W X ·
    first2 (J, M) Σ W² X · cross (P, M) Σ W² X_a X_b for the pairs ``pairs`` (P, 2) ·
    low / high (J, M) extremes of X over rows with W > 0 · boot (B, J, M) Σ P_b W X and
    boot_total (B, M) Σ P_b W with Poisson(1) multipliers P_b keyed by row (None without bootstrap).
    """

    count: FloatArray
    total: FloatArray
    total2: FloatArray
    first: FloatArray
    first2: FloatArray
    cross: FloatArray
    pairs: IntArray
    low: FloatArray
    high: FloatArray
    boot: FloatArray | None = None
    boot_total: FloatArray | None = None

    @classmethod
    def of(
        cls,
        x: FloatArray,
        w: FloatArray,
        *,
        pairs: IntArray,
        keys: npt.NDArray[np.uint64] | None = None,
        n_boot: int = 0,
        seed: int = 0,
    ) -> Sums:
        """Sums of one batch: x (n, J, M), w (n, M)."""
        n, j, m = x.shape
        w2 = w * w
        wx = w[:, None, :] * x
        used = (w > 0)[:, None, :]
        boot = boot_total = None
        if n_boot:
            assert keys is not None
            data = np.concatenate([wx.reshape(n, j * m), w], axis=1)
            sums = poisson_weight_sums(keys, data, n_boot, seed=seed)
            boot, boot_total = sums[:, : j * m].reshape(n_boot, j, m), sums[:, j * m :]
        return cls(
            count=(w > 0).sum(axis=0).astype(np.float64),
            total=w.sum(axis=0),
            total2=w2.sum(axis=0),
            first=wx.sum(axis=0),
            first2=np.einsum("nm,njm->jm", w2, x),
            cross=np.einsum("nm,npm,npm->pm", w2, x[:, pairs[:, 0]], x[:, pairs[:, 1]]),
            pairs=pairs,
            low=np.where(used, x, np.inf).min(axis=0) if n else np.full((j, m), np.inf),
            high=np.where(used, x, -np.inf).max(axis=0) if n else np.full((j, m), -np.inf),
            boot=boot,
            boot_total=boot_total,
        )

    def __add__(self, other: Sums) -> Sums:
        if not np.array_equal(self.pairs, other.pairs):
            raise ValueError("Only sums over the same column pairs can be merged.")
        add = lambda a, b: None if a is None or b is None else a + b  # noqa: E731
        return Sums(
            count=self.count + other.count,
            total=self.total + other.total,
            total2=self.total2 + other.total2,
            first=self.first + other.first,
            first2=self.first2 + other.first2,
            cross=self.cross + other.cross,
            pairs=self.pairs,
            low=np.minimum(self.low, other.low),
            high=np.maximum(self.high, other.high),
            boot=add(self.boot, other.boot),
            boot_total=add(self.boot_total, other.boot_total),
        )

    @property
    def means(self) -> FloatArray:
        """Weighted column means, shape (J, M)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.first / self.total

    def select(self, columns: IntArray) -> Sums:
        """The sums of a subset of columns chosen per metric: ``columns`` (J', M) indices.

        All pairs among the chosen columns must have been kept.
        """
        jn, m = columns.shape
        lookup = {(int(a), int(b)): p for p, (a, b) in enumerate(self.pairs)}
        new_pairs = all_pairs(jn)
        cols = np.arange(m)
        cross = np.empty((len(new_pairs), m))
        for p, (a, b) in enumerate(new_pairs):
            for mi in range(m):
                ca, cb = sorted((int(columns[a, mi]), int(columns[b, mi])))
                cross[p, mi] = self.cross[lookup[(ca, cb)], mi]
        take = lambda arr: None if arr is None else arr[..., columns, cols]  # noqa: E731
        return Sums(
            count=self.count,
            total=self.total,
            total2=self.total2,
            first=self.first[columns, cols],
            first2=self.first2[columns, cols],
            cross=cross,
            pairs=new_pairs,
            low=self.low[columns, cols],
            high=self.high[columns, cols],
            boot=take(self.boot),
            boot_total=self.boot_total,
        )

    def covariance(self) -> FloatArray:
        """S (J, J, M) = Σ W² (X_a − X̄_a)(X_b − X̄_b); needs all pairs kept."""
        j = self.first.shape[0]
        mean = self.means
        raw = np.zeros((j, j) + self.total.shape)
        raw[self.pairs[:, 0], self.pairs[:, 1]] = self.cross
        raw[self.pairs[:, 1], self.pairs[:, 0]] = self.cross
        return (
            raw
            - mean[:, None] * self.first2[None, :]
            - mean[None, :] * self.first2[:, None]
            + mean[:, None] * mean[None, :] * self.total2
        )

    def variance(self, gradient: FloatArray) -> FloatArray:
        """Delta-method variance g' S g / (Σ W)² with the n / (n − 1) correction, shape (M,)."""
        s = self.covariance()
        quad = np.einsum("am,abm,bm->m", gradient, s, gradient)
        n = self.count
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.maximum(quad, 0.0) / self.total**2 * n / (n - 1)
