"""The deployable rule of the constrained router: a Lagrangian score per arm, randomised on ties.

The routing LP's optimum is a threshold rule in disguise. With multipliers λ_c ≥ 0 for its mean
constraints (written ``g_c ≤ b_c``) and μ_g ≥ 0 for its provider caps, complementary slackness
says every request gives its free mass (1 − ε) only to arms minimising

    score[i, a] = objective[i, a] + Σ_c λ_c · g_c(i, a) + μ_provider(a),

so scoring a new request needs only a few numbers: a weight per outcome metric on q̂ and a price
per capped provider. Where the LP optimum randomises, the best arms tie, and a plain argmin with
an even split would shift mass between them and can break a binding constraint. The rule instead
splits each set of near-tied arms (score within ``tie_tol`` of the best) by ``tie_split``, one
split per tie set, calibrated at fit time on the fitted requests (a small LP over those splits, see
`policies.routing_lp.RoutingLP.calibrate`) so that the targets hold there in expectation. On new
requests a tie set never seen in fitting is split evenly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from policies.base import FloatArray, uniform_over

__all__ = ["LagrangianRule", "lp_tie_split", "tie_key", "tie_sets"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LagrangianRule:
    """Route to the lowest Lagrangian score, split near-ties as the LP did, add exploration.

    ``coef`` maps outcome metric → weight on q̂ (lower score is better); ``provider_price`` maps
    a capped provider → its share multiplier; ``tie_split`` maps a tie set ("armA|armB", names
    sorted, see `tie_key`) → each arm's share of the request's free mass; ``exploration`` is ε,
    spread evenly over each request's eligible arms. Scores are in units of the LP's normalised
    objective, so ``tie_tol`` is an absolute tolerance on them.
    """

    coef: dict[str, float]
    provider_price: dict[str, float] = field(default_factory=dict)
    tie_split: dict[str, dict[str, float]] = field(default_factory=dict)
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

    def tied(self, scores: FloatArray, eligible: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """The eligible arms whose score is within ``tie_tol`` of their request's best."""
        masked = np.where(eligible, scores, np.inf)
        best = masked.min(axis=1, keepdims=True)
        return eligible & (masked <= best + self.tie_tol)

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
        split = uniform_over(tied)
        for rows, cols in tie_sets(tied):
            shares = self.tie_split.get(tie_key(arms, cols), {})
            weight = np.array([shares.get(arms[c], 0.0) for c in cols])
            if weight.sum() > 0:
                split[np.ix_(rows, cols)] = weight / weight.sum()
        return self.exploration * uniform_over(eligible) + (1.0 - self.exploration) * split

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able fields (floats survive ``json`` exactly: it writes their shortest repr)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LagrangianRule:
        """Inverse of `to_dict`."""
        return cls(**data)  # type: ignore[arg-type]


def tie_sets(tied: npt.NDArray[np.bool_]) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """(rows, arms) of each distinct set of two or more tied arms (grouped with ``np.unique``, no row loop)."""
    multi = np.flatnonzero(tied.sum(axis=1) > 1)
    if not multi.size:
        return []
    patterns, inverse = np.unique(tied[multi], axis=0, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(patterns)))[:-1]
    return [(multi[rows], np.flatnonzero(p)) for p, rows in zip(patterns, np.split(order, bounds), strict=True)]


def tie_key(arms: Sequence[str], cols: npt.NDArray[np.intp]) -> str:
    """The ``tie_split`` key of a set of arms: their names, sorted, joined by "|"."""
    return "|".join(sorted(arms[c] for c in cols))


def lp_tie_split(sets: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]], lp_share: FloatArray,
                 weight: FloatArray) -> list[FloatArray]:
    """The LP's weighted aggregate split within each tie set; ``lp_share`` (n, K) its free mass shares."""
    out = []
    for rows, cols in sets:
        mass = np.maximum(weight[rows] @ lp_share[np.ix_(rows, cols)], 0.0)
        out.append(mass / mass.sum() if mass.sum() > 0 else np.full(cols.size, 1.0 / cols.size))
    return out
