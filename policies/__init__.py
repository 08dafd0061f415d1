"""Routing policies: each turns logged contexts into an (n, K) matrix of action probabilities."""

from __future__ import annotations

from policies.base import BasePolicy, Pairs, PairwisePolicy, Policy, PolicyError, spread, uniform_over
from policies.baselines import Cheapest, DirectOfficial, Fastest, Mixture, PriceWeighted, Uniform, blended_price
from policies.lagrangian import LagrangianRule
from policies.mess_plus import MessPlus
from policies.stage_route import StageRoute

__all__ = [
    "BasePolicy",
    "PairwisePolicy",
    "Pairs",
    "Cheapest",
    "ConstrainedRouter",
    "DirectOfficial",
    "LagrangianRule",
    "MessPlus",
    "Fastest",
    "Mixture",
    "Policy",
    "PolicyError",
    "PriceWeighted",
    "StageRoute",
    "Uniform",
    "blended_price",
    "spread",
    "uniform_over",
]


def __getattr__(name: str) -> object:
    """Import the cvxpy-based router only when asked for (cvxpy takes about a second to import)."""
    if name == "ConstrainedRouter":
        from policies.constrained import ConstrainedRouter

        return ConstrainedRouter
    raise AttributeError(f"module 'policies' has no attribute {name!r}")
