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


def _recenter(first2: FloatArray, cross: FloatArray, total2: FloatArray, shift: FloatArray, pairs: IntArray
              ) -> tuple[FloatArray, FloatArray]:
    """Move centred W²-moments from centre c to c − shift (shift (J, M) = c − new centre)."""
    a, b = pairs[:, 0], pairs[:, 1]
    cross = cross + shift[b] * first2[a] + shift[a] * first2[b] + shift[a] * shift[b] * total2
    return first2 + shift * total2, cross


@dataclass(frozen=True, slots=True)
class Sums:
    """Sums over rows of X (J, M per row) weighted by W (M per row).

    count (M,) rows with W > 0 · total (M,) Σ W · total2 (M,) Σ W² · first (J, M) Σ W X ·
    first2 (J, M) Σ W² (X − X̄) and cross (P, M) Σ W² (X_a − X̄_a)(X_b − X̄_b) for the pairs
    ``pairs`` (P, 2), centred at the sums' own weighted means X̄ = first / total so that large
    offsets do not cancel catastrophically (merged with Chan et al.'s parallel update) ·
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
        total = w.sum(axis=0)
        first = np.einsum("nm,njm->jm", w, x)
        centre = np.divide(first, total, out=np.zeros_like(first), where=total > 0)
        xc = x - centre
        used = (w > 0)[:, None, :]
        boot = boot_total = None
        if n_boot:
            assert keys is not None
            data = np.concatenate([(w[:, None, :] * x).reshape(n, j * m), w], axis=1)
            sums = poisson_weight_sums(keys, data, n_boot, seed=seed)
            boot, boot_total = sums[:, : j * m].reshape(n_boot, j, m), sums[:, j * m :]
        return cls(
            count=(w > 0).sum(axis=0).astype(np.float64),
            total=total,
            total2=w2.sum(axis=0),
            first=first,
            first2=np.einsum("nm,njm->jm", w2, xc),
            cross=np.einsum("nm,npm,npm->pm", w2, xc[:, pairs[:, 0]], xc[:, pairs[:, 1]]),
            pairs=pairs,
            low=np.where(used, x, np.inf).min(axis=0) if n else np.full((j, m), np.inf),
            high=np.where(used, x, -np.inf).max(axis=0) if n else np.full((j, m), -np.inf),
            boot=boot,
            boot_total=boot_total,
        )

    def __add__(self, other: Sums) -> Sums:
        if not np.array_equal(self.pairs, other.pairs):
            raise ValueError("Only sums over the same column pairs can be merged.")
        total = self.total + other.total
        first = self.first + other.first
        centre = np.divide(first, total, out=np.zeros_like(first), where=total > 0)
        moments = [
            _recenter(part.first2, part.cross, part.total2, part.centre - centre, self.pairs) for part in (self, other)
        ]
        add = lambda a, b: None if a is None or b is None else a + b  # noqa: E731
        return Sums(
            count=self.count + other.count,
            total=total,
            total2=self.total2 + other.total2,
            first=first,
            first2=moments[0][0] + moments[1][0],
            cross=moments[0][1] + moments[1][1],
            pairs=self.pairs,
            low=np.minimum(self.low, other.low),
            high=np.maximum(self.high, other.high),
            boot=add(self.boot, other.boot),
            boot_total=add(self.boot_total, other.boot_total),
        )

    @property
    def centre(self) -> FloatArray:
        """Weighted column means (0 where no row has weight), the centre of the moments."""
        return np.divide(self.first, self.total, out=np.zeros_like(self.first), where=self.total > 0)

    @property
    def means(self) -> FloatArray:
        """Weighted column means, shape (J, M) (NaN where no row has weight)."""
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
        s = np.zeros((j, j) + self.total.shape)
        s[self.pairs[:, 0], self.pairs[:, 1]] = self.cross
        s[self.pairs[:, 1], self.pairs[:, 0]] = self.cross
        return s

    def variance(self, gradient: FloatArray) -> FloatArray:
        """Delta-method variance g' S g / (Σ W)² with the n / (n − 1) correction, shape (M,)."""
        quad = np.einsum("am,abm,bm->m", gradient, self.covariance(), gradient)
        n = self.count
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.maximum(quad, 0.0) / self.total**2 * n / (n - 1)
