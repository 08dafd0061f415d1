"""The policy contract: contexts in, an (n, K) matrix of action probabilities out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ope.dataset import BanditDataset

__all__ = ["BLOCK_ROWS", "Policy", "PolicyError", "checked_q_hat", "spread", "uniform_over"]

FloatArray = npt.NDArray[np.float64]
BLOCK_ROWS = 4096  # rows of (n, K) work at a time: ~2 MB temporaries stay in cache


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


def uniform_over(mask: npt.NDArray[np.bool_], *, out: FloatArray | None = None) -> FloatArray:
    """Uniform probabilities over the True entries of each row; rows without any stay zero.

    ``out`` (n, K) float, if given, receives them (saves a fresh (n, K) array, slow to page in).
    """
    inverse = 1.0 / np.maximum(np.count_nonzero(mask, axis=1), 1)
    if out is None:
        return np.where(mask, inverse[:, None], 0.0)
    out.fill(0.0)
    np.copyto(out, inverse[:, None], where=mask)
    return out


def spread(scores: FloatArray, eligible: npt.NDArray[np.bool_], *, rtol: float = 1e-9, overwrite: bool = False) -> FloatArray:
    """Put each row's mass on its lowest-score eligible arms, split evenly among ties.

    Scores the same on every row (a broadcast (K,) row) need no (n, K) float work; with ``overwrite``
    the caller's (n, K) ``scores`` array is reused for the result. Rows go in blocks of ``BLOCK_ROWS``
    so that the temporaries stay in cache.
    """
    if scores.ndim == 2 and scores.shape[0] and scores.strides[0] == 0 and not np.isnan(scores[0]).any():
        row = scores[0]
        order = np.argsort(row, kind="stable")
        best = row[order][np.argmax(eligible[:, order], axis=1)]  # the first eligible arm by score (rows without any: masked below)
        return uniform_over(eligible & (row[None, :] <= (best + rtol * np.abs(best))[:, None]))
    out = scores if overwrite else np.empty(scores.shape)
    for start in range(0, scores.shape[0], BLOCK_ROWS):
        rows = slice(start, start + BLOCK_ROWS)
        masked = np.where(eligible[rows], scores[rows], np.inf)
        best = masked.min(axis=1, keepdims=True)
        uniform_over(eligible[rows] & (masked <= best + rtol * np.abs(best)), out=out[rows])
    return out


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
