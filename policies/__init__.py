"""Routing policies: each turns logged contexts into an (n, K) matrix of action probabilities."""

from __future__ import annotations

from policies.base import Policy, PolicyError, spread, uniform_over
from policies.baselines import Cheapest, DirectOfficial, Fastest, Mixture, PriceWeighted, Uniform, blended_price

__all__ = [
    "Cheapest",
    "DirectOfficial",
    "Fastest",
    "Mixture",
    "Policy",
    "PolicyError",
    "PriceWeighted",
    "Uniform",
    "blended_price",
    "spread",
    "uniform_over",
]
