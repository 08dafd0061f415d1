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
    """π(arm | row) = ``values`` at the pairs (``rows``, ``arms``), rows non-decreasing, each pair once; 0 elsewhere.

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

    def per_row(self, x: FloatArray) -> FloatArray:
        """(n,) sum of a per-pair value over each row's pairs."""
        return np.bincount(self.rows, weights=x, minlength=self.shape[0])

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
