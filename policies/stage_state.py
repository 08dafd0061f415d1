"""What StageRoute has learned, per arm, and its spend account: the state a stage starts from and ends in."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from policies.base import FloatArray

__all__ = ["StageState"]


@dataclass(slots=True)
class StageState:
    """What the router has learned, per arm (K,), plus the spend account and scales.

    ``served`` weighted requests served; ``residual`` Σ w (reward − q̂); ``cost_seen`` / ``cost_pred``
    Σ w observed / predicted cost of those requests; ``seen_w``, ``seen_r``, ``seen_c`` Σ w, Σ w q̂_r,
    Σ w q̂_cost over served requests on which the arm was eligible (for deployment); ``spend`` and
    ``traffic`` Σ w cost and Σ w over everything served; ``last_traffic`` Σ w in the last stage;
    ``level`` Σ w m_t, m_t a served request's mean q̂ cost over its eligible arms.
    """

    served: FloatArray
    residual: FloatArray
    cost_seen: FloatArray
    cost_pred: FloatArray
    seen_w: FloatArray
    seen_r: FloatArray
    seen_c: FloatArray
    spend: float
    traffic: float
    last_traffic: float
    level: float
    reward_scale: float
    cost_unit: float
    weight_unit: float

    @classmethod
    def fresh(cls, k: int, reward_scale: float, cost_unit: float, weight_unit: float) -> StageState:
        return cls(*(np.zeros(k) for _ in range(7)), 0.0, 0.0, 0.0, 0.0, reward_scale, cost_unit, weight_unit)

    def width(self, confidence: float, prior: float) -> FloatArray:
        """Optimism width per arm: confidence · sqrt(ln(e + N) / (prior + n_a))."""
        return confidence * np.sqrt(np.log(math.e + self.served.sum()) / (prior + self.served))

    def corrections(self, prior: float) -> tuple[FloatArray, FloatArray]:
        """δ_a (additive reward correction) and ρ_a (cost ratio), shrunk toward none by ``prior`` requests."""
        unit = prior * self.cost_unit
        return self.residual / (prior + self.served), (self.cost_seen + unit) / (self.cost_pred + unit)

    def copy(self) -> StageState:
        return StageState(**{k: v.copy() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()})

    def to_dict(self, arms: tuple[str, ...]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            out[key] = dict(zip(arms, map(float, value), strict=True)) if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object], arms: tuple[str, ...]) -> StageState:
        return cls(**{k: np.array([v[a] for a in arms]) if isinstance(v, dict) else v for k, v in data.items()})  # type: ignore[arg-type]
