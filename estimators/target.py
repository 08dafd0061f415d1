"""A target policy's action probabilities held at their non-zero (row, arm) pairs.

Estimators read π only at the logged arm, summed per arm, and against q̂ where it is non-zero; a
routing policy puts mass on a request's few eligible arms (~5 of 58), so the (n, K) matrix is
mostly zeros. Estimators accept either form: a matrix is turned into its pairs once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SparseTarget"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class SparseTarget:
    """π(arm | row) = ``values`` at the pairs (``rows``, ``arms``), sorted by row then arm, each once; 0 elsewhere.

    ``shape`` (n, K) is the matrix it stands for.
    """

    rows: IntArray
    arms: IntArray
    values: FloatArray
    shape: tuple[int, int]

    @classmethod
    def of(cls, pi: FloatArray) -> SparseTarget:
        """The non-zero entries of an (n, K) matrix."""
        rows, arms = np.nonzero(pi)
        return cls(rows, arms, pi[rows, arms], (pi.shape[0], pi.shape[1]))

    def problem(self) -> str | None:
        """What makes the pairs unusable (lengths, indices out of range, unsorted or repeated pairs), or None."""
        n, k = self.shape
        rows, arms, values = (np.asarray(a) for a in (self.rows, self.arms, self.values))
        if not (rows.ndim == arms.ndim == values.ndim == 1 and rows.size == arms.size == values.size):
            return f"rows, arms and values must be 1-d arrays of one length. Got shapes {rows.shape}, {arms.shape}, {values.shape}"
        if rows.size and not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(arms.dtype, np.integer)):
            return f"rows and arms must be integer indices. Got {rows.dtype} and {arms.dtype}"
        if rows.size and (rows.min() < 0 or rows.max() >= n or arms.min() < 0 or arms.max() >= k):
            return f"rows must lie in [0, {n}) and arms in [0, {k})"
        if rows.size > 1 and not (np.diff(rows.astype(np.int64) * k + arms) > 0).all():
            return "pairs must be sorted by row, then arm, each pair once (as SparseTarget.of gives them)"
        return None

    def per_row(self, x: FloatArray) -> FloatArray:
        """Sum of a per-pair value (m,) or (m, M) over each row's pairs: (n,) or (n, M)."""
        out = np.zeros((self.shape[0],) + np.shape(x)[1:])
        if self.rows.size:
            first = np.flatnonzero(np.r_[True, self.rows[1:] != self.rows[:-1]])
            out[self.rows[first]] = np.add.reduceat(x, first, axis=0)
        return out

    def at(self, actions: IntArray) -> FloatArray:
        """(n,) π of each row's arm in ``actions`` (the logged ones)."""
        hit = self.arms == actions[self.rows]
        out = np.zeros(self.shape[0])
        out[self.rows[hit]] = self.values[hit]
        return out

    def mass(self, weights: FloatArray) -> FloatArray:
        """(K,) Σ_rows weight × π(arm | row), the traffic each arm would get."""
        return np.bincount(self.arms, weights=weights[self.rows] * self.values, minlength=self.shape[1])

    def dense(self) -> FloatArray:
        """The (n, K) matrix."""
        out = np.zeros(self.shape)
        out[self.rows, self.arms] = self.values
        return out
