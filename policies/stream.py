"""What an online router sees of a dataset: predicted outcomes, eligibility, weights, arrival order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from policies.base import FloatArray, PolicyError, checked_q_hat

if TYPE_CHECKING:
    from policies.context import RoutingContext

__all__ = ["IntArray", "RequestStream", "time_order"]

IntArray = npt.NDArray[np.int64]


def time_order(dataset: RoutingContext) -> IntArray:
    """Row indices of the dataset in arrival order (stable for equal timestamps)."""
    return np.argsort(dataset.requests["ts"].dt.epoch("us").to_numpy(), kind="stable").astype(np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class RequestStream:
    """What an online router sees of a dataset: q̂ (n, K, M), eligibility, weights, arrival order.

    ``weight`` (n,) the sample weights; ``order`` (n,) the dataset rows in the
    order they are presented (Replay's row t is dataset row ``order[t]``); ``ts_us`` (n,) arrival.
    """

    q: FloatArray
    eligible: npt.NDArray[np.bool_]
    weight: FloatArray
    order: IntArray
    ts_us: IntArray
    metrics: tuple[str, ...]

    @classmethod
    def of(cls, dataset: RoutingContext, q_hat: FloatArray | None, who: str, order: IntArray | None = None) -> RequestStream:
        """Check q̂ against the dataset (as the constrained router does) and collect the arrays."""
        q = checked_q_hat(dataset, q_hat, who)
        if not dataset.eligible.any(axis=1).all():
            raise PolicyError(f"{who}: {int((~dataset.eligible.any(axis=1)).sum())} requests have no eligible arm.")
        rows = time_order(dataset) if order is None else np.asarray(order, dtype=np.int64)
        if sorted(rows.tolist()) != list(range(dataset.n)):
            raise PolicyError(f"{who}: 'order' must be a permutation of the {dataset.n} dataset rows.")
        weight = dataset.sample_weight
        ts = dataset.requests["ts"].dt.epoch("us").to_numpy().astype(np.int64)
        return cls(q, dataset.eligible, weight, rows, ts, tuple(dataset.metrics))

    @property
    def n(self) -> int:
        return self.q.shape[0]

    def metric(self, name: str) -> FloatArray:
        """The (n, K) slice of q̂ for one metric."""
        return self.q[..., self.metrics.index(name)]

    def typical(self, name: str) -> float:
        """Weighted mean over requests of a metric's mean |q̂| over eligible arms (1.0 if that is 0)."""
        per_row = np.where(self.eligible, np.abs(self.metric(name)), 0.0).sum(1) / self.eligible.sum(1)
        value = float(self.weight @ per_row / self.weight.sum())
        return value if value > 0 else 1.0
