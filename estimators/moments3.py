"""Mergeable third moments: the skewness of a linearized statistic from sums over rows.

A statistic's skewness needs Σ W³ ψ³ with ψ = g'(X − X̄) its per-row linearized value, and the
gradient g is only known once every row has been added. So the W³-weighted central moments of the
columns themselves are kept — Σ W³ (X_a − X̄_a)(X_b − X̄_b)(X_c − X̄_c) for every triple of columns
within a unit (the columns one statistic combines), with the lower W³-moments that moving their
centre needs — centred at the `Sums`' own weighted means X̄ and merged the way `Sums` merges its
second moments (Chan et al.'s update, one order higher). Then Σ W³ ψ³ = Σ_abc g_a g_b g_c T_abc.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["ThirdMoments", "all_triples", "unit_triples"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def all_triples(j: int) -> IntArray:
    """Every triple (a, b, c) with a ≤ b ≤ c of j columns, shape (Q, 3)."""
    idx = [(a, b, c) for a in range(j) for b in range(a, j) for c in range(b, j)]
    return np.array(idx, dtype=np.int64).reshape(-1, 3)


def unit_triples(units: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """The pairs (P, 2) and triples (Q, 3) within each unit [lo, hi) of ``units`` (U, 2), and for each
    triple (a, b, c) the indices (Q, 3) of its pairs (b, c), (a, c), (a, b) among those pairs."""
    return _unit_triples(tuple((int(lo), int(hi)) for lo, hi in units))


@lru_cache(maxsize=64)
def _unit_triples(units: tuple[tuple[int, int], ...]) -> tuple[IntArray, IntArray, IntArray]:
    pairs, triples = [], []
    for lo, hi in units:
        a, b = np.triu_indices(hi - lo)
        pairs.append(np.stack([a, b], axis=1) + lo)
        triples.append(all_triples(hi - lo) + lo)
    p = np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), dtype=np.int64)
    t = np.concatenate(triples).astype(np.int64) if triples else np.zeros((0, 3), dtype=np.int64)
    lookup = {(int(x), int(y)): i for i, (x, y) in enumerate(p)}
    index = np.array([[lookup[(int(b), int(c))], lookup[(int(a), int(c))], lookup[(int(a), int(b))]] for a, b, c in t],
                     dtype=np.int64).reshape(-1, 3)
    return p, t, index


def _within(xc: FloatArray, weighted: FloatArray, lo: int, hi: int) -> tuple[FloatArray, FloatArray]:
    """Σ W³ xc_a xc_b (M, V, V) and Σ W³ xc_a xc_b xc_c (M, V, V, V) of the varying columns lo … hi − 1."""
    x, wx = xc[:, lo:hi], weighted[:, lo:hi]
    v = hi - lo
    second = np.matmul(wx, x.transpose(0, 2, 1))
    third = np.empty(second.shape + (v,))
    for c in range(v):
        third[..., c] = np.matmul(wx * x[:, c : c + 1], x.transpose(0, 2, 1))
    return second, third


@dataclass(frozen=True, slots=True)
class ThirdMoments:
    """W³-weighted moments of the columns, centred at the `Sums`' W-weighted means X̄.

    total3 (M,) Σ W³ · first3 (J, M) Σ W³ (X − X̄) · cross3 (P, M) Σ W³ (X_a − X̄_a)(X_b − X̄_b) and
    triple3 (Q, M) Σ W³ (X_a − X̄_a)(X_b − X̄_b)(X_c − X̄_c) for the ``pairs`` and ``triples`` within each
    unit (`unit_triples`, whose ``index`` links each triple to its pairs).
    """

    total3: FloatArray
    first3: FloatArray
    cross3: FloatArray
    triple3: FloatArray
    pairs: IntArray
    triples: IntArray
    index: IntArray

    @classmethod
    def of(cls, xc: FloatArray, w: FloatArray, *, var_idx: IntArray, j: int, units: IntArray) -> ThirdMoments:
        """From the centred varying columns xc (M, V, n) of one batch and its weights w (M, n).

        Constant columns (not in ``var_idx``) have every centred moment exactly 0. A unit's varying
        columns are contiguous in xc (columns are in order), so each unit is a view and a few small products.
        """
        pairs, triples, index = unit_triples(units)
        m = w.shape[0]
        w3 = w * w * w
        weighted = xc * w3[:, None, :]
        first3 = np.zeros((j, m))
        first3[var_idx] = weighted.sum(axis=2).T
        where = np.full(j, -1)
        where[var_idx] = np.arange(var_idx.size)
        cross3, triple3 = np.zeros((pairs.shape[0], m)), np.zeros((triples.shape[0], m))
        for lo, hi in units:
            live = var_idx[(var_idx >= lo) & (var_idx < hi)]
            if live.size == 0:
                continue
            second, third = _within(xc, weighted, int(where[live[0]]), int(where[live[-1]]) + 1)
            in_p = np.flatnonzero((pairs[:, 0] >= lo) & (pairs[:, 1] < hi))
            pa, pb = where[pairs[in_p, 0]], where[pairs[in_p, 1]]
            ok = (pa >= 0) & (pb >= 0)
            base = where[live[0]]
            cross3[in_p[ok]] = second[:, pa[ok] - base, pb[ok] - base].T
            in_t = np.flatnonzero((triples[:, 0] >= lo) & (triples[:, 2] < hi))
            ta, tb, tc = (where[triples[in_t, i]] for i in range(3))
            ok = (ta >= 0) & (tb >= 0) & (tc >= 0)
            triple3[in_t[ok]] = third[:, ta[ok] - base, tb[ok] - base, tc[ok] - base].T
        return cls(w3.sum(axis=1), first3, cross3, triple3, pairs, triples, index)

    def moved(self, shift: FloatArray) -> ThirdMoments:
        """The same moments centred at X̄ − shift (``shift`` (J, M) = old centre − new centre)."""
        s, f, c, t3 = shift, self.first3, self.cross3, self.total3
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        cross3 = c + s[a] * f[b] + s[b] * f[a] + s[a] * s[b] * t3
        ta, tb, tc = self.triples.T
        bc, ac, ab = self.index.T
        triple3 = (self.triple3 + s[ta] * c[bc] + s[tb] * c[ac] + s[tc] * c[ab]
                   + s[ta] * s[tb] * f[tc] + s[ta] * s[tc] * f[tb] + s[tb] * s[tc] * f[ta] + s[ta] * s[tb] * s[tc] * t3)
        return ThirdMoments(t3, f + s * t3, cross3, triple3, self.pairs, self.triples, self.index)

    def __add__(self, other: ThirdMoments) -> ThirdMoments:
        """Moments of the union of two batches already centred at the same point (see `moved`)."""
        if not np.array_equal(self.triples, other.triples):
            raise ValueError("Only third moments over the same column triples can be merged.")
        return ThirdMoments(self.total3 + other.total3, self.first3 + other.first3, self.cross3 + other.cross3,
                            self.triple3 + other.triple3, self.pairs, self.triples, self.index)

    def select(self, columns: IntArray) -> ThirdMoments:
        """The moments of the columns ``columns`` (J', M) chosen per metric, one unit of J' columns (all their
        pairs and triples must have been kept)."""
        jn, m = columns.shape
        pairs, triples, index = unit_triples(np.array([[0, jn]]))
        p_look = {(int(a), int(b)): i for i, (a, b) in enumerate(self.pairs)}
        t_look = {(int(a), int(b), int(c)): i for i, (a, b, c) in enumerate(self.triples)}
        p_idx = np.array([[p_look[tuple(sorted((int(columns[a, mi]), int(columns[b, mi]))))] for mi in range(m)]  # type: ignore[index]
                          for a, b in pairs], dtype=np.int64).reshape(-1, m)
        t_idx = np.array([[t_look[tuple(sorted(int(columns[x, mi]) for x in t))] for mi in range(m)]  # type: ignore[index]
                          for t in triples], dtype=np.int64).reshape(-1, m)
        cols = np.arange(m)
        return ThirdMoments(self.total3, self.first3[columns, cols], self.cross3[p_idx, cols], self.triple3[t_idx, cols],
                            pairs, triples, index)

    def block(self, lo: int, hi: int) -> ThirdMoments:
        """The moments of the contiguous columns lo … hi − 1 (whole units), renumbered from 0."""
        keep_p = (self.pairs.min(axis=1) >= lo) & (self.pairs.max(axis=1) < hi)
        keep_t = (self.triples.min(axis=1) >= lo) & (self.triples.max(axis=1) < hi)
        renumber = np.cumsum(keep_p) - 1
        return ThirdMoments(self.total3, self.first3[lo:hi], self.cross3[keep_p], self.triple3[keep_t],
                            self.pairs[keep_p] - lo, self.triples[keep_t] - lo, renumber[self.index[keep_t]])

    def cubed(self, gradient: FloatArray) -> FloatArray:
        """Σ W³ ψ³ (M,) for ψ = g'(X − X̄), ``gradient`` g (J, M); needs every triple of the J columns."""
        a, b, c = self.triples.T
        distinct = 1 + (a != b).astype(int) + (b != c).astype(int)
        # multiplicity of a sorted triple in the full symmetric sum: 1 (aaa), 3 (aab, abb), 6 (abc)
        mult = np.choose(distinct - 1, [1.0, 3.0, 6.0])[:, None]
        return (mult * gradient[a] * gradient[b] * gradient[c] * self.triple3).sum(axis=0)
