"""Tail targets of the constrained router: P(Y ≤ T | x, a) from a distributional outcome model, as extra q̂ columns.

A cap on a policy's p95 of latency (or TTFT), p95 ≤ T, is the floor F_π(T) ≥ 0.95 on its CDF at T,
and F_π(T) = Σ_i v_i Σ_a π(a|x_i) P(Y ≤ T | x_i, a) is linear in π: one more mean target of the LP,
on the column P(Y ≤ T | x, a). That column comes from the log-scale outcome model's predicted mean
q̂(x, a) and its residual spread per arm (`ope.models.spread`, handed over as plain arrays):
P(Y ≤ T | x, a) = G_a(log(1 + T) − log(1 + q̂(x, a))), with G_a interpolated between the residual
quantiles ``knots[a]`` at ``levels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.base import FloatArray

__all__ = ["TAIL_TARGETS", "TailModel", "tail_column"]

#: setting → the metric whose p95 it caps
TAIL_TARGETS = {"max_p95_latency_ms": "latency_ms", "max_p95_ttft_ms": "ttft_ms"}
#: the quantile the settings cap
TAIL_LEVEL = 0.95


def tail_column(metric: str, threshold: float) -> str:
    """The name of the q̂ column P(metric ≤ threshold)."""
    return f"P({metric} <= {threshold:g})"


@dataclass(frozen=True, slots=True)
class TailModel:
    """Residual quantiles per metric and arm: ``knots[metric]`` (K, R + 1) at ``levels`` (R + 1,)."""

    levels: FloatArray
    knots: dict[str, FloatArray]

    def probability(self, q_metric: FloatArray, metric: str, threshold: float) -> FloatArray:
        """P(Y ≤ threshold | x, a) (n, K) from the predicted means ``q_metric`` (n, K) of ``metric``."""
        if metric not in self.knots:
            raise ValueError(f"The tail model has no residual spread of {metric} (it has {sorted(self.knots)}).")
        z = np.log1p(threshold) - np.log1p(np.maximum(q_metric, 0.0))
        out = np.empty(z.shape)
        for arm, knots in enumerate(self.knots[metric]):
            out[:, arm] = np.interp(z[:, arm], knots, self.levels, left=0.0, right=1.0)
        return out

    def columns(self, q: FloatArray, metrics: tuple[str, ...], tails: list[tuple[str, float]]) -> tuple[FloatArray, tuple[str, ...]]:
        """q̂ (n, K, M) with one column P(metric ≤ T) appended per (metric, T) of ``tails``, and the column names."""
        if not tails:
            return q, metrics
        extra = [self.probability(q[:, :, metrics.index(m)], m, t)[:, :, None] for m, t in tails]
        return np.concatenate([q, *extra], axis=2), metrics + tuple(tail_column(m, t) for m, t in tails)

    def to_dict(self) -> dict[str, Any]:
        return {"levels": self.levels.tolist(), "knots": {m: k.tolist() for m, k in self.knots.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TailModel:
        return cls(np.asarray(data["levels"], dtype=np.float64), {m: np.asarray(k, dtype=np.float64) for m, k in data["knots"].items()})
