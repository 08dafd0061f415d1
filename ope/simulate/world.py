"""The simulated world seen from a log: its contexts, eligible arms, logging policy and exact truth.

A :class:`World` fixes the n logged request contexts (hidden answer lengths included) and knows,
for every eligible arm, the distribution of the outcome that arm would have produced. Expected
outcomes and the value of any policy on these contexts are therefore computed exactly, not by
resampling: this is the ground truth every estimator is scored against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ope.data.schema import METRICS
from ope.errors import OPEError, SupportError
from ope.simulate.behavior import logging_probabilities
from ope.simulate.conditions import Conditions, eligibility, pair_conditions
from ope.simulate.contexts import Contexts
from ope.simulate.endpoints import ArmTable, PriceSchedule, arm_table, price_schedule
from ope.simulate.moments import expected_pair_outcomes, pair_variances
from ope.simulate.outcomes import FailureTimes, Outcomes, draw_outcomes, failure_times
from ope.simulate.spec import WorldSpec

__all__ = ["World"]

_ROW_SUM_TOL = 1e-6
_CACHED_SLAS = 4


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


class World:
    """Ground truth for n logged request contexts over K arms.

    Parameters
    ----------
    spec
        The world's parameters.
    contexts
        The logged request contexts, in log order.
    days
        Length of the log window (places price changes and incidents).

    Notes
    -----
    The K axis is ``arms``, sorted by name. For a target policy pi (n, K),
    ``true_value(pi) = Σ_i sw_i Σ_a pi[i, a] E[i, a, m] / Σ_i sw_i``, with sw the sample weights.
    """

    def __init__(self, spec: WorldSpec, contexts: Contexts, *, days: float) -> None:
        self.spec: WorldSpec = spec
        self.days: float = float(days)
        self.contexts: Contexts = contexts
        self.table: ArmTable = arm_table(spec)
        self.schedule: PriceSchedule = price_schedule(spec, self.table, self.days)
        self.timing: FailureTimes = failure_times(spec)
        mask = eligibility(self.table, contexts)
        if not mask.any(axis=1).all():
            msg = f"{int((~mask.any(axis=1)).sum())} simulated requests have no eligible arm."
            raise OPEError(msg)
        self.conditions: Conditions = pair_conditions(spec, self.table, self.schedule, contexts, mask, self.days)
        self.eligible: npt.NDArray[np.bool_] = _read_only(mask)
        self.logging_probabilities: npt.NDArray[np.float64] = _read_only(
            logging_probabilities(
                self.conditions,
                self.n,
                self.n_arms,
                epsilon=spec.epsilon,
                price_power=spec.price_power,
            )
        )
        pair_index = np.full(mask.shape, -1, dtype=np.int64)
        pair_index[self.conditions.rows, self.conditions.cols] = np.arange(self.conditions.rows.shape[0])
        self.pair_index: npt.NDArray[np.int64] = _read_only(pair_index)
        self._expected: dict[float, npt.NDArray[np.float64]] = {}

    @property
    def arms(self) -> tuple[str, ...]:
        """Arm names, sorted: the K axis."""
        return self.table.arms

    @property
    def n(self) -> int:
        """Number of logged requests."""
        return self.contexts.n

    @property
    def n_arms(self) -> int:
        """Number of arms K."""
        return len(self.table.arms)

    @property
    def sample_weight(self) -> npt.NDArray[np.float64]:
        """(n,) how many requests of full traffic each logged row stands for."""
        return self.contexts.sample_weight

    def arm_index(self, arms: Sequence[str]) -> npt.NDArray[np.int64]:
        """Positions on the K axis of the given arm names; unknown names raise ``OPEError``."""
        index = {arm: k for k, arm in enumerate(self.arms)}
        unknown = sorted(set(arms) - index.keys())
        if unknown:
            msg = f"Unknown arms (not in the simulated catalog): {unknown[:5]}."
            raise OPEError(msg)
        return np.array([index[a] for a in arms], dtype=np.int64)

    def expected_pair_outcomes(self, sla_latency_ms: float) -> npt.NDArray[np.float64]:
        """(P, M) exact expectations of the eligible pairs (``conditions`` order); cached per SLA."""
        sla = float(sla_latency_ms)
        if not sla > 0:
            msg = f"The 'sla_latency_ms' parameter must be a float > 0. Got {sla_latency_ms!r} instead."
            raise OPEError(msg)
        if sla not in self._expected:
            if len(self._expected) >= _CACHED_SLAS:
                self._expected.pop(next(iter(self._expected)))
            self._expected[sla] = _read_only(expected_pair_outcomes(self.conditions, self.timing.mean_ms, sla))
        return self._expected[sla]

    def pair_variances(self, sla_latency_ms: float) -> npt.NDArray[np.float64]:
        """(P, M) exact Var(Y | request, arm) of the eligible pairs (``conditions`` order)."""
        return pair_variances(self.conditions, self.expected_pair_outcomes(sla_latency_ms), self.timing.median_ms,
                              self.timing.sigma)

    def outcome_variances(self, sla_latency_ms: float) -> npt.NDArray[np.float64]:
        """(n, K, M) exact Var(Y | request, arm) per logged context and arm, 0 where ineligible."""
        out = np.zeros((self.n, self.n_arms, len(METRICS)))
        out[self.conditions.rows, self.conditions.cols] = self.pair_variances(sla_latency_ms)
        return out

    def expected_outcomes(self, sla_latency_ms: float) -> npt.NDArray[np.float64]:
        """(n, K, M) exact expected metrics per logged context and arm, 0 where ineligible.

        M follows ``ope.data.schema.METRICS``; ``sla_latency_ms`` defines ``sla_hit``.
        """
        pairs = self.expected_pair_outcomes(sla_latency_ms)
        out = np.zeros((self.n, self.n_arms, len(METRICS)))
        out[self.conditions.rows, self.conditions.cols] = pairs
        return out

    def true_value(self, pi: npt.ArrayLike, sla_latency_ms: float) -> dict[str, float]:
        """Exact sample-weighted mean of every metric under target policy ``pi`` (n, K)."""
        probs = self._check_policy(pi)
        pairs = self.expected_pair_outcomes(sla_latency_ms)
        rows, cols = self.conditions.rows, self.conditions.cols
        weights = self.sample_weight[rows] * probs[rows, cols]
        value = weights @ pairs / self.sample_weight.sum()
        return {metric: float(v) for metric, v in zip(METRICS, value, strict=True)}

    def draw_outcomes(self, arm_index: npt.ArrayLike, rng: np.random.Generator) -> Outcomes:
        """Fresh outcomes for every logged context served by ``arm_index[i]`` (must be eligible)."""
        arms = np.asarray(arm_index, dtype=np.int64)
        if arms.shape != (self.n,):
            msg = f"arm_index must have shape ({self.n},). Got {arms.shape} instead."
            raise OPEError(msg)
        pairs = self.pair_index[np.arange(self.n), arms]
        if (pairs < 0).any():
            msg = f"arm_index picks an ineligible arm for {int((pairs < 0).sum())} requests."
            raise SupportError(msg)
        return draw_outcomes(self.conditions, pairs, self.timing, rng)

    def _check_policy(self, pi: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """A target policy as an (n, K) float array; raise unless rows are distributions on E_i."""
        probs = np.asarray(pi, dtype=np.float64)
        if probs.shape != (self.n, self.n_arms):
            msg = f"The policy must have shape ({self.n}, {self.n_arms}). Got {probs.shape} instead."
            raise OPEError(msg)
        if not np.isfinite(probs).all() or probs.min(initial=0.0) < -1e-12:
            msg = "The policy must hold finite, non-negative probabilities."
            raise OPEError(msg)
        bad_rows = np.flatnonzero(np.abs(probs.sum(axis=1) - 1.0) > _ROW_SUM_TOL)
        if bad_rows.size:
            msg = f"Policy rows must sum to 1: {bad_rows.size} rows do not (first rows: {bad_rows[:5].tolist()})."
            raise OPEError(msg)
        outside = np.flatnonzero((np.where(self.eligible, 0.0, probs) > 1e-12).any(axis=1))
        if outside.size:
            msg = (
                f"The policy puts probability on ineligible arms in {outside.size} rows "
                f"(first rows: {outside[:5].tolist()})."
            )
            raise SupportError(msg)
        return probs
