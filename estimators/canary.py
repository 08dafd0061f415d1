"""Confidence sequences for a randomised canary: V(π), V(π₀) and V(π) − V(π₀) from importance weights.

A canary serves a share s of requests by the new policy π and the rest by the baseline π₀, and logs
each request's propensity p = (1 − s)·π₀(a|x) + s·π(a|x). The per-row importance-weighted terms

    w·r,   w₀·r,   (w − w₀)·r,   w = π(a|x)/p,  w₀ = π₀(a|x)/p,

have conditional means V(π), V(π₀) and their difference, and are bounded because the weights are:
the design itself gives w ≤ 1/s and w₀ ≤ 1/(1 − s). A metric r must have a known range [0, h]
(1 for rates; a declared cap for cost). Each term is rescaled by its known range to [0, 1] and given
the PrPl-EB confidence sequence of `estimators.sequence`. A row whose weight exceeds the declared
bound (the log is not the canary it claims to be) or whose metric leaves its range is refused, never
clipped: clipping would bias the sequence silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError
from estimators.sequence import EmpiricalBernsteinCS, SequenceState

__all__ = ["CanaryCS", "CanaryBounds"]

FloatArray = npt.NDArray[np.float64]
KINDS = ("value", "baseline", "difference")


@dataclass(frozen=True, slots=True)
class CanaryBounds:
    """Per-row bounds in the metrics' own units, each (n, M): policy value, baseline value, difference."""

    value: tuple[FloatArray, FloatArray]
    baseline: tuple[FloatArray, FloatArray]
    difference: tuple[FloatArray, FloatArray]
    estimate: FloatArray  # (n, M) λ-weighted centre of the difference sequence


def _first(mask: npt.NDArray[np.bool_]) -> list[int]:
    return np.flatnonzero(mask)[:5].tolist()


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryCS:
    """Confidence sequences, each at level 1 − ``alpha``, for a canary at share ``share`` on M metrics.

    ``metric_high`` is the known upper bound of each metric (lower bound 0).
    """

    alpha: float
    share: float
    metric_high: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (isinstance(self.share, float) and 0.0 < self.share < 1.0):
            msg = f"The 'share' parameter of CanaryCS must be a float in (0, 1). Got {self.share!r} instead."
            raise ValueError(msg)
        if not self.metric_high or not all(h > 0 and np.isfinite(h) for h in self.metric_high):
            msg = f"The 'metric_high' parameter of CanaryCS must be finite bounds > 0. Got {self.metric_high!r} instead."
            raise ValueError(msg)
        EmpiricalBernsteinCS(alpha=self.alpha)

    @property
    def weight_bounds(self) -> tuple[float, float]:
        """Largest possible weight of the policy (1/s) and of the baseline (1/(1 − s))."""
        return 1.0 / self.share, 1.0 / (1.0 - self.share)

    def ranges(self) -> tuple[FloatArray, FloatArray]:
        """Known (low, high) of the 3M terms: values of π, of π₀, then differences."""
        high = np.asarray(self.metric_high, dtype=np.float64)
        b1, b0 = self.weight_bounds
        zero = np.zeros_like(high)
        return np.concatenate([zero, zero, -b0 * high]), np.concatenate([b1 * high, b0 * high, b1 * high])

    def start(self) -> SequenceState:
        """The state before any row."""
        return SequenceState.start(3 * len(self.metric_high))

    def update(self, state: SequenceState, *, weight: npt.ArrayLike, baseline_weight: npt.ArrayLike,
               outcomes: npt.ArrayLike) -> tuple[SequenceState, CanaryBounds]:
        """Add rows in time order: weights (n,) of π and π₀ and outcomes (n, M); the new state and each row's bounds."""
        w1, w0, r = self._checked(weight, baseline_weight, outcomes)
        terms = np.hstack([w1[:, None] * r, w0[:, None] * r, (w1 - w0)[:, None] * r])
        low, high = self.ranges()
        scaled = np.clip((terms - low) / (high - low), 0.0, 1.0)  # clip only rounding: inputs were checked
        state, b = EmpiricalBernsteinCS(alpha=self.alpha).update(state, scaled)
        lo, hi = low + b.low * (high - low), low + b.high * (high - low)
        centre = low + b.center * (high - low)
        m = r.shape[1]
        return state, CanaryBounds((lo[:, :m], hi[:, :m]), (lo[:, m:2 * m], hi[:, m:2 * m]),
                                   (lo[:, 2 * m:], hi[:, 2 * m:]), centre[:, 2 * m:])

    def _checked(self, weight: npt.ArrayLike, baseline_weight: npt.ArrayLike,
                 outcomes: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        w1, w0 = np.asarray(weight, dtype=np.float64), np.asarray(baseline_weight, dtype=np.float64)
        r = np.asarray(outcomes, dtype=np.float64)
        m = len(self.metric_high)
        if r.ndim != 2 or r.shape[1] != m or w1.shape != (r.shape[0],) or w0.shape != w1.shape:
            msg = f"weight and baseline_weight must have shape (n,) and outcomes (n, {m}). Got {w1.shape}, {w0.shape}, {r.shape}."
            raise EstimatorInputError(msg)
        b1, b0 = self.weight_bounds
        for name, w, bound in (("policy", w1, b1), ("baseline", w0, b0)):
            bad = ~(np.isfinite(w) & (w >= 0) & (w <= bound * (1 + 1e-9)))
            if bad.any():
                msg = (f"{int(bad.sum())} rows have a {name} importance weight outside [0, {bound:g}] (1/share at share "
                       f"{self.share:g}): the log is not a canary of this policy at that share (first rows: {_first(bad)}).")
                raise EstimatorInputError(msg)
        high = np.asarray(self.metric_high)
        bad = ~(np.isfinite(r) & (r >= 0) & (r <= high)).all(axis=1)
        if bad.any():
            msg = (f"{int(bad.sum())} rows have an outcome outside its known range [0, {list(self.metric_high)}] "
                   f"(first rows: {_first(bad)}).")
            raise EstimatorInputError(msg)
        return w1, w0, r
