"""Replay evaluation of policies that learn online (MESS+, StageRoute, bandits).

Such a policy's behaviour at row t depends on what it saw before, so it cannot be scored from one
(n, K) matrix. Replay walks the log in order and keeps a row only when the policy could have
produced it; the policy learns from kept rows only, exactly as it would have online.

Notes
-----
Rejection sampling (Dudík, Erhan, Langford & Li, 2012, generalising Li, Chu, Langford & Wang,
2011): row t is accepted with probability π_t(a_t | x_t) / (M · p_t), so accepted rows are a sample
of the policy's own play. With uniform logging over K arms, a deterministic policy and M = K this is
the replay method of Li et al.: keep the row exactly when the policy picks the logged arm. M must
bound π/p; rows where it does not are counted as ``n_overflow`` (their acceptance is capped at 1,
which biases the estimate toward the logger). This is the one estimator that is sequential by
nature, so it is not a mergeable reduction.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError
from estimators.feedback import BanditFeedback
from estimators.resample import hash_keys

__all__ = ["OnlinePolicy", "Replay", "ReplayResult"]

FloatArray = npt.NDArray[np.float64]


class OnlinePolicy(Protocol):
    """A policy that acts on row t and learns from what it is shown."""

    def probabilities(self, t: int, eligible: npt.NDArray[np.bool_]) -> FloatArray:
        """π_t(· | x_t), shape (K,), zero outside ``eligible``."""
        ...

    def update(self, t: int, arm: int, reward: FloatArray) -> None:
        """Learn from row t having been served by ``arm`` with outcome ``reward`` (M,)."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Replay value per metric over the accepted rows, with a normal interval."""

    value: FloatArray
    stderr: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    n_accepted: int
    n_overflow: int
    n: int
    accepted: npt.NDArray[np.bool_]

    @property
    def acceptance_rate(self) -> float:
        """Share of logged rows the policy could use."""
        return self.n_accepted / self.n


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """Rejection-sampling replay; ``scale`` is M (default: max over rows of 1 / propensity)."""

    scale: float | None = None
    seed: int = 0
    alpha: float = 0.05

    def estimate(self, fb: BanditFeedback, policy: OnlinePolicy) -> ReplayResult:
        """Walk the rows in the order given (sort by time first) and score the policy."""
        p = fb.propensities
        scale = float(1.0 / p.min()) if self.scale is None else float(self.scale)
        if not scale > 0:
            raise EstimatorInputError(f"The 'scale' parameter of Replay must be > 0. Got {self.scale!r} instead.")
        keys = hash_keys(fb.keys ^ np.uint64(self.seed))
        u = (keys >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        eligible = np.ones((fb.n, fb.n_arms), dtype=bool) if fb.eligible is None else fb.eligible
        accepted = np.zeros(fb.n, dtype=bool)
        overflow = 0
        for t in range(fb.n):
            pi = policy.probabilities(t, eligible[t])
            ratio = pi[fb.actions[t]] / (scale * p[t])
            overflow += ratio > 1 + 1e-12
            if u[t] < ratio:
                accepted[t] = True
                policy.update(t, int(fb.actions[t]), fb.rewards[t])
        return self._result(fb, accepted, overflow)

    def _result(self, fb: BanditFeedback, accepted: npt.NDArray[np.bool_], overflow: int) -> ReplayResult:
        n_acc = int(accepted.sum())
        if n_acc < 2:
            raise EstimatorInputError(f"Replay accepted {n_acc} of {fb.n} rows: too few to estimate anything.")
        r = fb.rewards[accepted]
        w = fb.weights[accepted][:, None] * ~np.isnan(r)
        r = np.nan_to_num(r)
        total = w.sum(axis=0)
        value = (w * r).sum(axis=0) / total
        n_m = (w > 0).sum(axis=0)
        var = (w**2 * (r - value) ** 2).sum(axis=0) / total**2 * n_m / np.maximum(n_m - 1, 1)
        stderr = np.sqrt(var)
        z = NormalDist().inv_cdf(1 - self.alpha / 2)
        return ReplayResult(value, stderr, value - z * stderr, value + z * stderr, n_acc, int(overflow), fb.n, accepted)
