"""Drawing one outcome per request from the distribution of the (request, arm) pair that served it.

The draws follow :class:`~ope.simulate.conditions.Conditions` literally: a status from the status
probabilities; on ``ok``, TTFT and tokens/s from their lognormals, latency = TTFT + 1000 · o / R,
cost at the price in force, a Bernoulli satisfaction; on a failure, no tokens, no cost, no
feedback, and TTFT = latency = the time until the failure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ope.simulate.conditions import Conditions
from ope.simulate.spec import FAILURE_STATUSES, STATUSES, WorldSpec

__all__ = ["FailureTimes", "Outcomes", "draw_outcomes", "failure_times"]


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class FailureTimes:
    """Lognormal time (ms) to each failure kind, in ``FAILURE_STATUSES`` order."""

    median_ms: npt.NDArray[np.float64]
    sigma: npt.NDArray[np.float64]

    @property
    def mean_ms(self) -> npt.NDArray[np.float64]:
        """Mean time to each failure kind: median · exp(sigma² / 2)."""
        return self.median_ms * np.exp(0.5 * self.sigma**2)


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Outcomes:
    """One drawn outcome per request; ``status`` indexes ``STATUSES``, satisfaction is NaN on failure."""

    status: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    ttft_ms: npt.NDArray[np.float64]
    latency_ms: npt.NDArray[np.float64]
    cost_usd: npt.NDArray[np.float64]
    satisfaction: npt.NDArray[np.float64]

    @property
    def status_names(self) -> npt.NDArray[np.str_]:
        """Status of each request as its schema string (``ok``, ``rate_limited``, ...)."""
        return np.array([s.value for s in STATUSES])[self.status]


def failure_times(spec: WorldSpec) -> FailureTimes:
    """The spec's failure timings as arrays in ``FAILURE_STATUSES`` order."""
    by_status = {f.status: f for f in spec.failures}
    return FailureTimes(
        median_ms=np.array([by_status[s.value].median_ms for s in FAILURE_STATUSES]),
        sigma=np.array([by_status[s.value].sigma for s in FAILURE_STATUSES]),
    )


def draw_outcomes(
    cond: Conditions, pairs: npt.NDArray[np.int64], timing: FailureTimes, rng: np.random.Generator
) -> Outcomes:
    """Draw the outcome of pair ``pairs[j]`` (an index into ``cond``) for every j.

    The same five uniform/normal draws are made for every row whatever its status, so the
    stream of random numbers, and hence the log, depends only on the seed.
    """
    m = pairs.shape[0]
    cdf = np.cumsum(cond.status_probs[pairs], axis=1)
    u_status = rng.random(m) * cdf[:, -1]
    status = np.minimum((u_status[:, None] >= cdf).sum(axis=1), len(STATUSES) - 1).astype(np.int64)
    ttft = np.exp(cond.mu_ttft[pairs] + cond.sigma_ttft[pairs] * rng.standard_normal(m))
    tps = np.exp(cond.mu_tps[pairs] + cond.sigma_tps[pairs] * rng.standard_normal(m))
    z_fail = rng.standard_normal(m)
    satisfied = rng.random(m) < cond.p_satisfied[pairs]
    ok = status == 0
    kind = np.maximum(status - 1, 0)
    fail_ms = timing.median_ms[kind] * np.exp(timing.sigma[kind] * z_fail)
    output = np.where(ok, cond.output_tokens[pairs], 0)
    latency = ttft + 1000.0 * output / tps
    return Outcomes(
        status=status,
        output_tokens=output.astype(np.int64),
        ttft_ms=np.where(ok, ttft, fail_ms),
        latency_ms=np.where(ok, latency, fail_ms),
        cost_usd=np.where(ok, cond.ok_cost[pairs], 0.0),
        satisfaction=np.where(ok, satisfied.astype(np.float64), np.nan),
    )
