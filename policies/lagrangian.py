"""The deployable rule of the constrained router: a Lagrangian score per arm, randomised on ties.

The routing LP's optimum is a threshold rule in disguise. With multipliers λ_c ≥ 0 for its mean
constraints (written ``g_c ≤ b_c``) and μ_g ≥ 0 for its provider caps, complementary slackness
says every request gives its free mass (1 − ε) only to arms minimising

    score[i, a] = objective[i, a] + Σ_c λ_c · g_c(i, a) + μ_provider(a),

so scoring a new request needs only a few numbers: a weight per outcome metric on q̂ and a price
per capped provider. Where the LP optimum randomises, the best arms tie; a plain argmin with an
even split would then shift mass between them and can break a binding constraint. The rule
instead splits near-ties (score within ``tie_tol`` of the best) in proportion to per-arm
``tie_weight``: the LP's own average share of each arm over the fitted requests where it tied.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from policies.base import FloatArray, uniform_over

__all__ = ["LagrangianRule", "fitted_tie_weights"]

#: tie weight of an arm the fitted requests never saw tied (equal to any other unseen arm)
DEFAULT_TIE_WEIGHT = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class LagrangianRule:
    """Route to the lowest Lagrangian score, split near-ties by ``tie_weight``, add exploration.

    ``coef`` maps outcome metric → weight on q̂ (lower score is better); ``provider_price`` maps
    a capped provider → its share multiplier; ``tie_weight`` maps arm → its weight among tied arms;
    ``exploration`` is ε, spread evenly over each request's eligible arms. Scores are in units of
    the LP's normalised objective, so ``tie_tol`` is an absolute tolerance on them.
    """

    coef: dict[str, float]
    provider_price: dict[str, float] = field(default_factory=dict)
    tie_weight: dict[str, float] = field(default_factory=dict)
    exploration: float = 0.0
    tie_tol: float = 1e-6

    def scores(self, q_hat: FloatArray, *, metrics: Sequence[str], providers: Sequence[str]) -> FloatArray:
        """The (n, K) Lagrangian score of every request and arm (ineligible entries included)."""
        unknown = sorted(set(self.coef) - set(metrics))
        if unknown:
            msg = f"The rule weighs metrics {unknown} that q̂ does not have (its metrics: {list(metrics)})."
            raise ValueError(msg)
        weights = np.array([self.coef.get(m, 0.0) for m in metrics])
        offset = np.array([self.provider_price.get(p, 0.0) for p in providers])
        return q_hat @ weights + offset

    def probabilities(
        self,
        q_hat: FloatArray,
        eligible: npt.NDArray[np.bool_],
        *,
        metrics: Sequence[str],
        arms: Sequence[str],
        providers: Sequence[str],
    ) -> FloatArray:
        """π(a|x), shape (n, K): ε/|E_i| on each eligible arm, 1 − ε on the best (tie-split) arms."""
        tied = self.tied(self.scores(q_hat, metrics=metrics, providers=providers), eligible)
        rho = np.array([self.tie_weight.get(a, DEFAULT_TIE_WEIGHT) for a in arms])
        weight = np.where(tied, rho, 0.0)
        total = weight.sum(axis=1, keepdims=True)
        split = np.where(total > 0, weight / np.where(total > 0, total, 1.0), uniform_over(tied))
        return self.exploration * uniform_over(eligible) + (1.0 - self.exploration) * split

    def tied(self, scores: FloatArray, eligible: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """The eligible arms whose score is within ``tie_tol`` of their request's best."""
        masked = np.where(eligible, scores, np.inf)
        best = masked.min(axis=1, keepdims=True)
        return eligible & (masked <= best + self.tie_tol)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able fields (floats survive ``json`` exactly: it writes their shortest repr)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LagrangianRule:
        """Inverse of `to_dict`."""
        return cls(**data)  # type: ignore[arg-type]

    def to_json(self) -> str:
        """The rule as JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True)


def fitted_tie_weights(
    tied: npt.NDArray[np.bool_], lp_share: FloatArray, weight: FloatArray, arms: Sequence[str]
) -> dict[str, float]:
    """Each arm's weighted mean LP share over the fitted requests where it tied with another arm.

    ``tied`` (n, K) the rule's near-tied best arms; ``lp_share`` (n, K) the LP's free mass per arm
    as a fraction of 1 − ε; ``weight`` (n,) request weights. Arms never tied get no entry.
    """
    multi = tied.sum(axis=1) > 1
    if not multi.any():
        return {}
    w = weight[multi, None] * tied[multi]
    count = w.sum(axis=0)
    mass = (w * lp_share[multi]).sum(axis=0)
    return {arms[k]: float(max(mass[k] / count[k], 0.0)) for k in np.flatnonzero(count > 0)}
