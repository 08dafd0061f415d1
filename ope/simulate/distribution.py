"""Exact outcome distributions: P(Y ≤ t) of every eligible (request, arm) pair, and a policy's exact quantiles.

Each pair's outcome is a mixture over statuses (`ope.simulate.outcomes`): on ``ok``, TTFT ~ LogNormal,
tokens/s R ~ LogNormal, latency = TTFT + 1000 · o / R (its CDF by the same quadrature as the SLA hit,
`ope.simulate.moments.sla_probability`), cost the price of the answer, throughput R; on a failure of
kind f, TTFT = latency ~ LogNormal(log median_f, σ_f²), cost 0, throughput 0. A policy's CDF is
F_π(t) = Σ_i s_i Σ_a π(a|i) F_ia(t) / Σ_i s_i over the logged contexts, and its p-quantile
inf{t : F_π(t) ≥ p}, solved in log t.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from ope.data.facts import DISTRIBUTION_METRICS
from ope.errors import OPEError
from ope.simulate.moments import sla_probability
from ope.simulate.world import World

__all__ = ["DISTRIBUTION_METRICS", "pair_cdf", "policy_cdf", "true_quantiles"]

FloatArray = npt.NDArray[np.float64]
_ITERATIONS = 60
_NODES = 64


def pair_cdf(world: World, metric: str, t: float, pairs: npt.NDArray[np.int64] | None = None) -> FloatArray:
    """(P,) exact P(Y ≤ t) of the eligible pairs (``conditions`` order), or of the pairs ``pairs`` indexes."""
    if metric not in DISTRIBUTION_METRICS:
        raise OPEError(f"Exact distributions exist for {', '.join(DISTRIBUTION_METRICS)}. Got {metric!r}.")
    c = world.conditions
    idx = np.arange(c.rows.size) if pairs is None else pairs
    probs = c.status_probs[idx]
    p_ok = probs[:, 0]
    if metric in ("cost_usd", "throughput_tps"):
        fail = np.where(t >= 0, 1.0, 0.0) * (1 - p_ok)
        if metric == "cost_usd":
            return p_ok * (c.ok_cost[idx] <= t) + fail
        ok = ndtr((np.log(t) - c.mu_tps[idx]) / c.sigma_tps[idx]) if t > 0 else np.zeros(idx.size)
        return p_ok * ok + fail
    if t <= 0:
        return np.zeros(idx.size)
    timing = world.timing
    fail = probs[:, 1:] @ _fail_cdf(t, timing.median_ms, timing.sigma)
    if metric == "ttft_ms":
        ok = ndtr((np.log(t) - c.mu_ttft[idx]) / c.sigma_ttft[idx])
    else:
        ok = sla_probability(c.mu_ttft[idx], c.sigma_ttft[idx], c.mu_tps[idx], c.sigma_tps[idx], c.output_tokens[idx], t,
                             nodes=_NODES)
    return p_ok * ok + fail


def _mass(world: World, pi: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """The pairs a policy uses and their share s_i π(a|i) / Σ s."""
    probs = world._check_policy(pi)
    c = world.conditions
    mass = world.sample_weight[c.rows] * probs[c.rows, c.cols] / world.sample_weight.sum()
    used = np.flatnonzero(mass > 0)
    return used, mass[used]


def policy_cdf(world: World, pi: npt.ArrayLike, metric: str, thresholds: npt.ArrayLike) -> FloatArray:
    """Exact F_π(t) at each threshold (G,)."""
    used, mass = _mass(world, pi)
    return np.array([mass @ pair_cdf(world, metric, float(t), used) for t in np.atleast_1d(thresholds)])


def _fail_cdf(t: float, median: FloatArray, sigma: FloatArray) -> FloatArray:
    """P(time to failure f ≤ t) per failure kind; a kind with σ = 0 fails at exactly its median."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.log(t) - np.log(median)) / sigma
    return np.where(sigma > 0, ndtr(z), (median <= t).astype(np.float64))


def _root(cdf: Callable[[float], float], p: float, lo: float, hi: float, f_lo: float, f_hi: float) -> float:
    """inf{t : cdf(t) ≥ p} in the bracket [lo, hi] of log t (cdf(e^lo) < p ≤ cdf(e^hi)) by the Illinois method."""
    side = 0
    for _ in range(_ITERATIONS):
        if hi - lo < 1e-10:
            break
        mid = (lo * (f_hi - p) - hi * (f_lo - p)) / (f_hi - f_lo) if f_hi > f_lo else 0.5 * (lo + hi)
        mid = min(max(mid, lo + 1e-3 * (hi - lo)), hi - 1e-3 * (hi - lo))
        f_mid = cdf(float(np.exp(mid)))
        if f_mid >= p:
            hi, f_hi = mid, f_mid
            f_lo = f_lo if side != -1 else p + (f_lo - p) / 2
            side = -1
        else:
            lo, f_lo = mid, f_mid
            f_hi = f_hi if side != 1 else p + (f_hi - p) / 2
            side = 1
    return float(np.exp(hi))


def true_quantiles(world: World, pi: npt.ArrayLike, metric: str, levels: tuple[float, ...]) -> FloatArray:
    """Exact p-quantiles (L,) of the policy's outcome distribution: bracketed on a log grid of 33 points from 1e-7
    to 1e9, then solved to a relative precision of about 1e-10 in log t."""
    used, mass = _mass(world, pi)
    cdf = lambda t: float(mass @ pair_cdf(world, metric, t, used))
    zero_mass = cdf(0.0) if metric in ("cost_usd", "throughput_tps") else 0.0
    logs = np.log(np.geomspace(1e-7, 1e9, 33))
    values = np.array([cdf(float(np.exp(x))) for x in logs])
    out = []
    for p in levels:
        if p <= zero_mass:
            out.append(0.0)
            continue
        k = int(np.searchsorted(values, p, side="left"))
        if k == 0 or k >= logs.size:
            raise OPEError(f"The {p} quantile of {metric} lies outside [1e-7, 1e9].")
        out.append(_root(cdf, p, logs[k - 1], logs[k], values[k - 1], values[k]))
    return np.array(out)
