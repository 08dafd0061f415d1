"""Mergeable sufficient statistics: every estimate and interval from sums over rows.

An estimator turns each row into J columns X (per metric) and a weight W; everything it reports is
a function of these sums, so a log can be evaluated whole, batch by batch, or on many workers whose
`Sums` are added — the same numbers every way (DESIGN §5). Second moments are kept only for the
column pairs a statistic needs (a tuned estimator's many candidates need not be crossed with each
other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from estimators.moments3 import ThirdMoments
from estimators.resample import poisson_weight_sums

if TYPE_CHECKING:
    from estimators.armpooled import ArmSums

__all__ = ["CellSums", "Sums", "all_pairs"]

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


def _cross(gram: FloatArray, pairs: IntArray, var_idx: IntArray, j: int) -> FloatArray:
    """The kept pairs' Σ W² xc_a xc_b (..., P, M) from Gram matrices (..., M, V, V); 0 where a column is constant."""
    where = np.full(j, -1)
    where[var_idx] = np.arange(var_idx.size)
    a, b = where[pairs[:, 0]], where[pairs[:, 1]]
    live = (a >= 0) & (b >= 0)
    out = np.zeros(gram.shape[:-3] + (pairs.shape[0], gram.shape[-3]))
    out[..., live, :] = np.swapaxes(gram[..., a[live], b[live]], -1, -2)
    return out


@dataclass(frozen=True, slots=True)
class CellSums:
    """`Sums` of the varying columns of many cells (contiguous runs of rows) at once, the cell axis last.

    count, total, total2 (M, C) · first, first2, low, high (M, V, C) · gram (M, V, V, C), each cell's
    moments centred at its own means. Cells of one batch are reduced in one pass; `grouped` adds them
    into the groups they belong to (a group is any union of cells, e.g. a period or a model).
    """

    count: FloatArray
    total: FloatArray
    total2: FloatArray
    first: FloatArray
    first2: FloatArray
    gram: FloatArray
    low: FloatArray
    high: FloatArray

    @classmethod
    def of(cls, x: FloatArray, w: FloatArray, bounds: IntArray) -> CellSums:
        """x (M, V, n), w (M, n) of rows in cell order; ``bounds`` (C,) the first row of each (non-empty) cell."""
        red = lambda a: np.add.reduceat(a, bounds, axis=-1)  # noqa: E731
        w2 = w * w
        total = red(w)
        first = red(x * w[:, None, :])
        centre = np.divide(first, total[:, None], out=np.zeros_like(first), where=total[:, None] > 0)
        xc = x - np.repeat(centre, np.diff(bounds, append=x.shape[2]), axis=2)
        weighted = xc * w2[:, None, :]
        v = x.shape[1]
        gram = np.empty(x.shape[:2] + (v, bounds.size))
        for a, b in all_pairs(v):
            gram[:, a, b] = gram[:, b, a] = red(weighted[:, a] * xc[:, b])
        return cls(count=np.add.reduceat(w > 0, bounds, axis=1, dtype=np.int64).astype(np.float64), total=total,
                   total2=red(w2), first=first, first2=red(weighted), gram=gram,
                   low=np.minimum.reduceat(x, bounds, axis=2), high=np.maximum.reduceat(x, bounds, axis=2))

    @classmethod
    def concat(cls, parts: list[CellSums]) -> CellSums:
        """The cells of several blocks of rows, in order."""
        return cls(*(np.concatenate([getattr(p, f) for p in parts], axis=-1) for f in cls.__slots__))

    def grouped(self, member: IntArray, n_groups: int, *, pairs: IntArray, constants: FloatArray) -> list[Sums]:
        """The `Sums` of each of ``n_groups`` groups; ``member`` (P, C) is the group of each cell in each of P groupings.

        Cells are merged with Chan et al.'s update (moments moved from each cell's centre to its group's), as `Sums` adds.
        """
        cell = np.tile(np.arange(member.shape[1]), member.shape[0])
        group = member.ravel()

        def add(a: FloatArray) -> FloatArray:  # a (..., P·C): one value per cell and grouping
            out = np.zeros(a.shape[:-1] + (n_groups,))
            np.add.at(out, (..., group), a)
            return out

        total, first = add(self.total[:, cell]), add(self.first[..., cell])
        centre = np.divide(first, total[:, None], out=np.zeros_like(first), where=total[:, None] > 0)
        own = np.divide(self.first, self.total[:, None], out=np.zeros_like(self.first), where=self.total[:, None] > 0)
        shift = own[..., cell] - centre[..., group]                              # (M, V, PC)
        total2, first2 = self.total2[:, None, cell], self.first2[..., cell]
        gram = (self.gram[..., cell] + shift[:, None] * first2[:, :, None] + shift[:, :, None] * first2[:, None]
                + shift[:, :, None] * shift[:, None] * total2[:, None])
        low, high = np.full(first.shape, np.inf), np.full(first.shape, -np.inf)
        np.minimum.at(low, (..., group), self.low[..., cell])
        np.maximum.at(high, (..., group), self.high[..., cell])
        return _assemble(add(self.count[:, cell]), total, add(self.total2[:, cell]), first, add(first2 + shift * total2), add(gram), low, high,
                         pairs=pairs, constants=constants)


def _assemble(count: FloatArray, total: FloatArray, total2: FloatArray, first: FloatArray, first2: FloatArray, gram: FloatArray,
              low: FloatArray, high: FloatArray, *, pairs: IntArray, constants: FloatArray) -> list[Sums]:
    """One `Sums` per group from the varying columns' grouped sums (group axis last), constants filled in."""
    const = np.asarray(constants, dtype=np.float64)
    var_idx = np.flatnonzero(np.isnan(const))
    value = np.nan_to_num(const)[None, :, None]
    full = lambda a, fill: np.broadcast_to(fill, a.shape[-1:] + (const.size,) + a.shape[:1]).copy()  # noqa: E731  (G, J, M)
    out_first, out_first2 = full(total, value * total.T[:, None]), full(total, 0.0)
    out_low = full(total, np.where(count.T[:, None] > 0, value, np.inf))
    out_high = full(total, np.where(count.T[:, None] > 0, value, -np.inf))
    for dst, src in ((out_first, first), (out_first2, first2), (out_low, low), (out_high, high)):
        dst[:, var_idx] = src.transpose(2, 1, 0)
    cross = _cross(gram.transpose(3, 0, 1, 2), pairs, var_idx, const.size)
    return [Sums(count=count[:, g], total=total[:, g], total2=total2[:, g], first=out_first[g], first2=out_first2[g], cross=cross[g],
                 pairs=pairs, low=out_low[g], high=out_high[g]) for g in range(total.shape[1])]


@dataclass(frozen=True, slots=True)
class Sums:
    """Sums over rows of X (J, M per row) weighted by W (M per row).

    count (M,) rows with W > 0 · total (M,) Σ W · total2 (M,) Σ W² · first (J, M) Σ W X ·
    first2 (J, M) Σ W² (X − X̄) and cross (P, M) Σ W² (X_a − X̄_a)(X_b − X̄_b) for the pairs
    ``pairs`` (P, 2), centred at the sums' own weighted means X̄ = first / total so that large
    offsets do not cancel catastrophically (merged with Chan et al.'s parallel update) ·
    low / high (J, M) extremes of X over the batch's rows (rows whose outcome is missing count
    with outcome 0: a slightly wider, still valid range for the Bernstein bound) · boot (B, J, M) Σ P_b W X and
    boot_total (B, M) Σ P_b W with Poisson(1) multipliers P_b keyed by row (None without bootstrap) ·
    third: the W³-weighted moments a skewness needs (`estimators.moments3`; None when not accumulated) ·
    pooled: the per-arm sums of an arm-pooled variance (`estimators.armpooled`; None for estimators without them).
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
    third: ThirdMoments | None = None
    pooled: ArmSums | None = None

    @classmethod
    def of(
        cls,
        x: FloatArray,
        w: FloatArray,
        *,
        pairs: IntArray,
        constants: FloatArray,
        keys: npt.NDArray[np.uint64] | None = None,
        n_boot: int = 0,
        seed: int = 0,
        units: IntArray | None = None,
    ) -> Sums:
        """Sums of one batch from its varying columns only.

        x (M, V, n) holds the V varying columns, metric-major so every product is a BLAS call;
        w (M, n) the row weights; ``constants`` (J,) is NaN for a varying column and the value of
        a constant one (its centred moments are exactly 0, so they are not computed). With ``units``
        (U, 2), column ranges [lo, hi) that statistics combine, the third moments within each are kept too.
        """
        m, v, n = x.shape
        const = np.asarray(constants, dtype=np.float64)
        var_idx = np.flatnonzero(np.isnan(const))
        assert var_idx.size == v
        j = const.shape[0]
        w2 = w * w
        total, total2 = w.sum(axis=1), w2.sum(axis=1)
        count = np.count_nonzero(w > 0, axis=1)  # rows with weight; faster than bool sums on the transposed w
        first_v = np.einsum("mvn,mn->mv", x, w)  # (M, V); not BLAS, so identical columns give identical sums
        centre = np.divide(first_v, total[:, None], out=np.zeros_like(first_v), where=total[:, None] > 0)
        xc = x - centre[:, :, None]
        weighted = xc * w2[:, None, :]
        gram = np.matmul(weighted, xc.transpose(0, 2, 1))                   # (M, V, V)
        first = np.outer(np.nan_to_num(const), total)                       # constants: value × Σ W
        first[var_idx] = first_v.T
        first2 = np.zeros((j, m))
        first2[var_idx] = np.einsum("mvn,mn->vm", xc, w2)
        low = np.broadcast_to(np.where(count > 0, np.nan_to_num(const)[:, None], np.inf), (j, m)).copy()
        high = np.broadcast_to(np.where(count > 0, np.nan_to_num(const)[:, None], -np.inf), (j, m)).copy()
        low[var_idx], high[var_idx] = x.min(axis=2).T, x.max(axis=2).T
        boot = boot_total = None
        if n_boot:
            assert keys is not None
            data = np.concatenate([(x * w[:, None, :]).reshape(m * v, n), w], axis=0).T
            sums = poisson_weight_sums(keys, data, n_boot, seed=seed)
            boot_total = sums[:, m * v :]
            boot = np.einsum("j,bm->bjm", np.nan_to_num(const), boot_total)
            boot[:, var_idx] = sums[:, : m * v].reshape(n_boot, m, v).transpose(0, 2, 1)
        return cls(
            count=count.astype(np.float64), total=total, total2=total2, first=first, first2=first2,
            cross=_cross(gram, pairs, var_idx, j),
            pairs=pairs,
            low=low,
            high=high,
            boot=boot,
            boot_total=boot_total,
            third=None if units is None else ThirdMoments.of(xc, w, var_idx=var_idx, j=j, units=units),
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
        third = None
        if self.third is not None and other.third is not None:
            third = self.third.moved(self.centre - centre) + other.third.moved(other.centre - centre)
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
            third=third,
            pooled=add(self.pooled, other.pooled),
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

    def select(self, columns: IntArray, *, third: bool = True) -> Sums:
        """The sums of a subset of columns chosen per metric: ``columns`` (J', M) indices.

        All pairs among the chosen columns must have been kept, and with ``third`` (when third moments
        were accumulated) all their triples; ``third=False`` leaves the third moments out.
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
            third=None if self.third is None or not third else self.third.select(columns),
            pooled=None if self.pooled is None else self.pooled.select(columns),
        )

    def block(self, lo: int, hi: int) -> Sums:
        """The sums of the contiguous columns lo … hi − 1, with the kept pairs among them (renumbered from 0).

        Sums accumulated for many estimators side by side (`estimators.combined`) split into each one's sums this way.
        """
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        keep = (np.minimum(a, b) >= lo) & (np.maximum(a, b) < hi)
        return Sums(
            count=self.count,
            total=self.total,
            total2=self.total2,
            first=self.first[lo:hi],
            first2=self.first2[lo:hi],
            cross=self.cross[keep],
            pairs=self.pairs[keep] - lo,
            low=self.low[lo:hi],
            high=self.high[lo:hi],
            boot=None if self.boot is None else self.boot[:, lo:hi],
            boot_total=self.boot_total,
            third=None if self.third is None else self.third.block(lo, hi),
            pooled=None if self.pooled is None else self.pooled.block(lo, hi),
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
