"""Policies by config kind: build one from a `PolicyConfig`, rejecting unknown settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ope.config import PolicyConfig
from ope.errors import ConfigError
from policies import Cheapest, DirectOfficial, Fastest, MessPlus, Mixture, Policy, PriceWeighted, StageRoute, Uniform

__all__ = ["build_policy", "KINDS"]

def _constrained(**settings: Any) -> Policy:
    from policies.constrained import ConstrainedRouter  # cvxpy only when a config asks for it

    return ConstrainedRouter(**settings)


#: kind → (constructor, settings it accepts besides name and epsilon)
KINDS: dict[str, tuple[Callable[..., Policy], set[str]]] = {
    "constrained": (_constrained, {"objective", "min_satisfaction", "min_sla_hit", "max_cost_usd", "max_share",
                                   "exploration", "solver", "max_rows", "seed"}),
    "mess_plus": (MessPlus, {"min_satisfaction", "V", "c"}),
    "stage_route": (StageRoute, {"max_cost_usd", "max_deployed", "stage_hours", "refresh_minutes", "capacity", "reward",
                                 "confidence", "prior_weight", "pacing", "seed"}),
    "direct_official": (DirectOfficial, {"fallback"}),
    "cheapest": (Cheapest, set()),
    "fastest": (Fastest, set()),
    "price_weighted": (PriceWeighted, set()),
    "uniform": (Uniform, set()),
}


#: kinds that explore on their own terms, so an ε-mixture would change what they are
NO_EPSILON = {"constrained": "use 'exploration', not 'epsilon'.",
              "mess_plus": "it explores by its own schedule p_t = min(1, c / t^(1/5)); set 'c', not 'epsilon'.",
              "stage_route": "it explores by optimism (its confidence bounds); set 'confidence', not 'epsilon'."}


def build_policy(cfg: PolicyConfig) -> Policy:
    """The policy a config entry describes; ``epsilon`` mixes any kind with uniform exploration."""
    if cfg.kind not in KINDS:
        msg = f"Policy '{cfg.name}': unknown kind '{cfg.kind}' (known kinds: {', '.join(sorted(KINDS))})."
        raise ConfigError(msg)
    make, allowed = KINDS[cfg.kind]
    params: dict[str, Any] = dict(cfg.params)
    epsilon = params.pop("epsilon", None)
    if epsilon is not None and cfg.kind in NO_EPSILON:
        raise ConfigError(f"Policy '{cfg.name}' (kind {cfg.kind}): {NO_EPSILON[cfg.kind]}")
    unknown = set(params) - allowed
    if unknown:
        msg = f"Policy '{cfg.name}' (kind {cfg.kind}): unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed | {'epsilon'})}."
        raise ConfigError(msg)
    try:
        policy = make(name=cfg.name, **params)
        if epsilon is not None:
            policy = Mixture(policy=policy, epsilon=float(epsilon), name=cfg.name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Policy '{cfg.name}': {exc}") from exc
    return policy
