"""The logging (behaviour) policy: price-weighted load balancing mixed with ε-uniform exploration.

    pi0(a | i) = (1 - ε) · b_ia^(-γ) / Σ_a' b_ia'^(-γ) + ε / |E_i|    for a in E_i, else 0,

where E_i is the eligible set of request i, b_ia = (3 · price_in + price_out) / 4 is the blended
list price in force at the request's arrival and γ = ``price_power``. Every eligible arm has
probability at least ε / |E_i|, so every sensible target policy is evaluable.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ope.simulate.conditions import Conditions

__all__ = ["blended_price", "logging_probabilities"]


def blended_price(price_in: npt.NDArray[np.float64], price_out: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Blended price per Mtok, weighting input 3:1 as a typical request does."""
    return (3.0 * price_in + price_out) / 4.0


def logging_probabilities(
    cond: Conditions, n: int, n_arms: int, *, epsilon: float, price_power: float
) -> npt.NDArray[np.float64]:
    """(n, K) action probabilities of the logging policy; rows sum to 1, zero outside eligible."""
    weight = blended_price(cond.price_in, cond.price_out) ** (-price_power)
    row_total = np.bincount(cond.rows, weights=weight, minlength=n)
    row_count = np.bincount(cond.rows, minlength=n)
    probs = np.zeros((n, n_arms))
    probs[cond.rows, cond.cols] = (1.0 - epsilon) * weight / row_total[cond.rows] + epsilon / row_count[cond.rows]
    return probs
