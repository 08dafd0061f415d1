"""The policy contract: contexts in, an (n, K) matrix of action probabilities out.

Policies whose probabilities are zero off each request's eligible arms (every policy must be) may
also give them at the eligible (row, arm) pairs alone (`Pairs`, ``pair_probabilities``): a request
has ~5 eligible arms of 58, and a streamed run never needs the (n, K) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ope.data.dataset import BanditDataset

__all__ = ["Pairs", "Policy", "PolicyError", "checked_q_hat", "probabilities_at", "spread", "uniform_over"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class PolicyError(ValueError):
    """A policy cannot act as asked (no official endpoint, infeasible constraints, ...)."""


@runtime_checkable
class Policy(Protocol):
    """A routing policy. ``fit`` learns from logs where the policy learns; it returns self."""

    name: str

    def fit(self, dataset: BanditDataset) -> Policy: ...

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        """π(a|x) for every logged context, shape (n, K), rows sum to 1, zero outside eligible."""
        ...


def uniform_over(mask: npt.NDArray[np.bool_]) -> FloatArray:
    """Uniform probabilities over the True entries of each row; rows without any stay zero."""
    inverse = 1.0 / np.maximum(np.count_nonzero(mask, axis=1), 1)
    return np.where(mask, inverse[:, None], 0.0)


@dataclass(frozen=True, slots=True, eq=False)
class Pairs:
    """The eligible (row, arm) pairs of a dataset, row by row: where a policy's probabilities may be non-zero.

    rows, arms (m,) the pairs (rows non-decreasing) · n, n_arms the dense shape · first (R,) where each
    of the R rows that has pairs starts, and ``filled`` (R,) those rows.
    """

    rows: IntArray
    arms: IntArray
    n: int
    n_arms: int
    first: IntArray
    filled: IntArray

    @classmethod
    def of(cls, eligible: npt.NDArray[np.bool_]) -> Pairs:
        """The True entries of an (n, K) eligibility matrix."""
        rows, arms = np.nonzero(eligible)
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if rows.size else np.zeros(0, dtype=np.int64)
        return cls(rows, arms, eligible.shape[0], eligible.shape[1], first, rows[first])

    def row_sum(self, x: FloatArray) -> FloatArray:
        """(n,) sum of a per-pair value over each row's pairs (0 for a row without any)."""
        out = np.zeros(self.n)
        if self.rows.size:
            out[self.filled] = np.add.reduceat(x, self.first)
        return out

    def row_min(self, x: FloatArray) -> FloatArray:
        """(n,) least per-pair value of each row (inf for a row without any)."""
        out = np.full(self.n, np.inf)
        if self.rows.size:
            out[self.filled] = np.minimum.reduceat(x, self.first)
        return out

    def uniform(self, mask: npt.NDArray[np.bool_]) -> FloatArray:
        """Uniform probabilities over each row's pairs where ``mask`` (m,) holds; rows without any stay zero."""
        count = self.row_sum(mask.astype(np.float64))
        return np.where(mask, 1.0 / np.maximum(count, 1.0)[self.rows], 0.0)

    def lowest(self, scores: FloatArray, *, rtol: float = 1e-9) -> FloatArray:
        """Each row's mass on its lowest-score pairs, split evenly among ties (within ``rtol``)."""
        best = self.row_min(scores)[self.rows]
        return self.uniform(scores <= best + rtol * np.abs(best))

    def dense(self, values: FloatArray) -> FloatArray:
        """The (n, K) matrix holding ``values`` at the pairs and 0 elsewhere."""
        out = np.zeros((self.n, self.n_arms))
        out[self.rows, self.arms] = values
        return out


def probabilities_at(policy: Policy, dataset: BanditDataset, pairs: Pairs, *args: Any) -> FloatArray:
    """π at the eligible pairs (m,): from the policy's ``pair_probabilities`` when it has one, else read off its (n, K) matrix."""
    at_pairs = getattr(policy, "pair_probabilities", None)
    if at_pairs is not None:
        return np.asarray(at_pairs(dataset, pairs, *args), dtype=np.float64)
    return np.asarray(policy.action_probabilities(dataset, *args), dtype=np.float64)[pairs.rows, pairs.arms]


def spread(scores: FloatArray, eligible: npt.NDArray[np.bool_], *, rtol: float = 1e-9) -> FloatArray:
    """Put each row's mass on its lowest-score eligible arms, split evenly among ties (an (n, K) matrix)."""
    pairs = Pairs.of(eligible)
    return pairs.dense(pairs.lowest(np.broadcast_to(scores, eligible.shape)[pairs.rows, pairs.arms], rtol=rtol))


def checked_q_hat(dataset: BanditDataset, q_hat: FloatArray | None, who: str) -> FloatArray:
    """q̂ (n, K, M) checked against the dataset for a policy that routes on it; non-finite values off the eligible set become 0."""
    if q_hat is None:
        msg = f"{who} routes on predicted outcomes: pass q_hat (n, K, M), e.g. fit_outcome_models(dataset).q_hat."
        raise PolicyError(msg)
    q = np.asarray(q_hat, dtype=np.float64)
    expected = (dataset.n, dataset.catalog.n_arms, len(dataset.metrics))
    if q.shape != expected:
        raise PolicyError(f"{who}: q_hat must have shape {expected} (n, K, M). Got {q.shape}.")
    finite = np.isfinite(q).all(axis=2)
    if (bad := ~finite & dataset.eligible).any():
        raise PolicyError(f"{who}: q_hat is not finite on {int(bad.sum())} eligible pairs.")
    return q if finite.all() else np.where(finite[..., None], q, 0.0)  # anything may stand outside eligible
