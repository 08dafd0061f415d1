"""Exact expected outcomes of every eligible (request, arm) pair, from its outcome distribution.

With p_ok the probability of ``ok``, c the cost of an ``ok`` answer, m_f the mean time to a
failure of kind f, T = TTFT ~ LogNormal(mu1, s1²), R = tokens/s ~ LogNormal(mu2, s2²) and o the
answer length (deterministic given request and arm):

- cost = p_ok · c;  success = p_ok;  satisfaction = p_ok · p_sat
- ttft = p_ok · E[T] + Σ_f p_f m_f,  E[T] = exp(mu1 + s1²/2)
- latency = p_ok · (E[T] + 1000 · o · E[1/R]) + Σ_f p_f m_f,  E[1/R] = exp(-mu2 + s2²/2)
- throughput = p_ok · E[R] (an ``ok`` row's throughput is exactly R),  E[R] = exp(mu2 + s2²/2)
- sla_hit = p_ok · P(T + D <= SLA) with D = 1000 · o / R, again lognormal: Gauss–Hermite
  quadrature over the log of the smaller of the two terms of Φ((log(SLA − x) − m) / s) of the
  other, zero where the smaller term alone overruns the SLA.

`pair_variances` gives each pair's exact Var(Y | request, arm) from the same lognormal moments (failure
times F_f ~ LogNormal(log median_f, σ_f²)): the conditional variance an interval would use if it knew it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from ope.data.schema import METRICS
from ope.simulate.conditions import Conditions

__all__ = ["GH_NODES", "expected_pair_outcomes", "pair_variances", "sla_probability"]

#: Gauss–Hermite nodes for the SLA integral (absolute error about 1e-5 against a dense grid)
GH_NODES = 96
_CHUNK = 32_768


def _sum_cdf(
    m_inner: npt.NDArray[np.float64],
    s_inner: npt.NDArray[np.float64],
    m_outer: npt.NDArray[np.float64],
    s_outer: npt.NDArray[np.float64],
    limit: float,
    nodes: int,
) -> npt.NDArray[np.float64]:
    """P(X + Y <= limit), log X ~ N(m_inner, s_inner²), log Y ~ N(m_outer, s_outer²), independent.

    Gauss–Hermite over log X of Φ((log(limit − X) − m_outer) / s_outer), zero where X >= limit.
    """
    x, w = np.polynomial.hermite.hermgauss(nodes)
    w = w / np.sqrt(np.pi)
    out = np.empty(m_inner.shape[0])
    for lo in range(0, m_inner.shape[0], _CHUNK):
        part = slice(lo, lo + _CHUNK)
        remaining = limit - np.exp(m_inner[part, None] + np.sqrt(2.0) * s_inner[part, None] * x[None, :])
        positive = remaining > 0
        z = (np.log(np.where(positive, remaining, 1.0)) - m_outer[part, None]) / s_outer[part, None]
        out[part] = np.where(positive, ndtr(z), 0.0) @ w
    return out


def sla_probability(
    mu_ttft: npt.NDArray[np.float64],
    sigma_ttft: npt.NDArray[np.float64],
    mu_tps: npt.NDArray[np.float64],
    sigma_tps: npt.NDArray[np.float64],
    output_tokens: npt.NDArray[np.int64],
    sla_ms: float,
    *,
    nodes: int = GH_NODES,
) -> npt.NDArray[np.float64]:
    """P(T + 1000 · o / R <= sla_ms) per pair for independent lognormal T (ms) and R (tokens/s).

    The decode time D = 1000 · o / R is lognormal too. The quadrature runs over whichever of T
    and D has the smaller mean: the other then dominates the sum and the integrand stays smooth
    (integrating over the dominant term would give a near-step integrand and a poor quadrature).
    """
    mu_decode = np.log(1000.0 * output_tokens) - mu_tps
    decode_smaller = mu_decode + 0.5 * sigma_tps**2 <= mu_ttft + 0.5 * sigma_ttft**2
    m_inner = np.where(decode_smaller, mu_decode, mu_ttft)
    s_inner = np.where(decode_smaller, sigma_tps, sigma_ttft)
    m_outer = np.where(decode_smaller, mu_ttft, mu_decode)
    s_outer = np.where(decode_smaller, sigma_ttft, sigma_tps)
    return _sum_cdf(m_inner, s_inner, m_outer, s_outer, sla_ms, nodes)


def expected_pair_outcomes(
    cond: Conditions, failure_means: npt.NDArray[np.float64], sla_ms: float
) -> npt.NDArray[np.float64]:
    """(P, M) exact expected metrics per eligible pair, M in ``ope.data.schema.METRICS`` order.

    ``failure_means`` is the mean time (ms) to each failure, in ``FAILURE_STATUSES`` order.
    """
    p_ok = cond.status_probs[:, 0]
    failure_time = cond.status_probs[:, 1:] @ failure_means
    mean_ttft = np.exp(cond.mu_ttft + 0.5 * cond.sigma_ttft**2)
    mean_inv_tps = np.exp(-cond.mu_tps + 0.5 * cond.sigma_tps**2)
    mean_tps = np.exp(cond.mu_tps + 0.5 * cond.sigma_tps**2)
    sla = sla_probability(cond.mu_ttft, cond.sigma_ttft, cond.mu_tps, cond.sigma_tps, cond.output_tokens, sla_ms)
    columns = {
        "cost_usd": p_ok * cond.ok_cost,
        "success": p_ok,
        "satisfaction": p_ok * cond.p_satisfied,
        "ttft_ms": p_ok * mean_ttft + failure_time,
        "latency_ms": p_ok * (mean_ttft + 1000.0 * cond.output_tokens * mean_inv_tps) + failure_time,
        "throughput_tps": p_ok * mean_tps,
        "sla_hit": p_ok * sla,
    }
    return np.column_stack([columns[m] for m in METRICS])


def pair_variances(
    cond: Conditions, expected: npt.NDArray[np.float64], failure_median_ms: npt.NDArray[np.float64],
    failure_sigma: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """(P, M) exact variance of every metric of every eligible pair, given its ``expected`` outcomes (P, M)."""
    p_ok, p_fail = cond.status_probs[:, 0], cond.status_probs[:, 1:]
    fail_sq = p_fail @ (failure_median_ms**2 * np.exp(2 * failure_sigma**2))
    t1, t2 = np.exp(cond.mu_ttft + cond.sigma_ttft**2 / 2), np.exp(2 * cond.mu_ttft + 2 * cond.sigma_ttft**2)
    inv1, inv2 = np.exp(-cond.mu_tps + cond.sigma_tps**2 / 2), np.exp(-2 * cond.mu_tps + 2 * cond.sigma_tps**2)
    decode = 1000.0 * cond.output_tokens
    second = {
        "cost_usd": p_ok * cond.ok_cost**2,
        "success": p_ok,
        "satisfaction": p_ok * cond.p_satisfied,
        "ttft_ms": p_ok * t2 + fail_sq,
        "latency_ms": p_ok * (t2 + 2 * decode * t1 * inv1 + decode**2 * inv2) + fail_sq,
        "throughput_tps": p_ok * np.exp(2 * cond.mu_tps + 2 * cond.sigma_tps**2),
        "sla_hit": expected[:, METRICS.index("sla_hit")],  # a 0/1 outcome: E[Y²] = E[Y]
    }
    return np.maximum(np.column_stack([second[m] for m in METRICS]) - expected**2, 0.0)
