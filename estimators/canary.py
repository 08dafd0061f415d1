"""Confidence sequences for a randomised canary: V(π), V(π₀) and V(π) − V(π₀) from importance weights.

A canary serves a share s of requests by the new policy π and the rest by the baseline π₀, and logs
each request's propensity p = (1 − s)·π₀(a|x) + s·π(a|x). The per-row importance-weighted terms

    w·r,   w₀·r,   (w − w₀)·r,   w = π(a|x)/p,  w₀ = π₀(a|x)/p,

have conditional means V(π), V(π₀) and their difference, and are bounded because the weights are:
the design itself gives w ≤ 1/s and w₀ ≤ 1/(1 − s). A metric r must have a known range [0, h]
(1 for rates; a declared cap for cost). Each term gets the confidence sequence of
`estimators.onesided`, whose lower and upper sides each pay only for the distance to their own
known bound. A row whose weight exceeds the declared bound (the log is not the canary it claims to
be) or whose metric leaves its range is refused, never clipped: clipping would bias the sequence
silently.

With ``doubly_robust=True`` the terms are the doubly robust pseudo-outcomes (Waudby-Smith, Wu,
Ramdas, Karampatziakis & Mineiro, "Anytime-valid off-policy inference for contextual bandits", 2022)

    q̂(x, π) + w·(r − q̂(x, a)),   q̂(x, π₀) + w₀·(r − q̂(x, a)),   Δq̂(x) + (w − w₀)·(r − q̂(x, a)),

with q̂ in [0, h] predictable: fitted only on data before the row (a history log, or earlier rows),
so each term's conditional mean is still V(π), V(π₀), Δ and the sequences stay valid whatever q̂
is. A good q̂ lowers the terms' variance; their known range is wider by 2h, so where the range and
not the variance limits the sequence (a cost cap far above typical costs) it decides later, not
sooner (`docs/experiments/canary_sequences.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError
from estimators.onesided import OneSidedBernsteinCS, OneSidedState

__all__ = ["CanaryBounds", "CanaryCS"]

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

    ``metric_high`` is the known upper bound of each metric (lower bound 0); ``doubly_robust`` makes
    `update` take q̂ and use the doubly robust terms.
    """

    alpha: float
    share: float
    metric_high: tuple[float, ...]
    doubly_robust: bool = False
    truncation: float = 0.9

    def __post_init__(self) -> None:
        if not (isinstance(self.share, float) and 0.0 < self.share < 1.0):
            msg = f"The 'share' parameter of CanaryCS must be a float in (0, 1). Got {self.share!r} instead."
            raise ValueError(msg)
        if not self.metric_high or not all(h > 0 and np.isfinite(h) for h in self.metric_high):
            msg = f"The 'metric_high' parameter of CanaryCS must be finite bounds > 0. Got {self.metric_high!r} instead."
            raise ValueError(msg)
        OneSidedBernsteinCS(alpha=self.alpha, truncation=self.truncation)

    @property
    def weight_bounds(self) -> tuple[float, float]:
        """Largest possible weight of the policy (1/s) and of the baseline (1/(1 − s))."""
        return 1.0 / self.share, 1.0 / (1.0 - self.share)

    def ranges(self) -> tuple[FloatArray, FloatArray]:
        """Known (low, high) of the 3M terms: values of π, of π₀, then differences.

        IPS terms: [0, h/s], [0, h/(1 − s)], [−h/(1 − s), h/s]. Doubly robust terms add q̂(x, π) ∈ [0, h] to a
        residual term w·(r − q̂) ∈ [−wh, wh]: [−h/s, h + h/s], [−h/(1 − s), h + h/(1 − s)], and for the
        difference Δq̂ ∈ [−h, h] plus (w − w₀)(r − q̂) ∈ ±h·max(1/s, 1/(1 − s)).
        """
        h = np.asarray(self.metric_high, dtype=np.float64)
        b1, b0 = self.weight_bounds
        if self.doubly_robust:
            b = max(b1, b0)
            return np.concatenate([-b1 * h, -b0 * h, -(1 + b) * h]), np.concatenate([(1 + b1) * h, (1 + b0) * h, (1 + b) * h])
        zero = np.zeros_like(h)
        return np.concatenate([zero, zero, -b0 * h]), np.concatenate([b1 * h, b0 * h, b1 * h])

    def start(self) -> OneSidedState:
        """The state before any row."""
        return OneSidedState.start(*self.ranges())

    def update(self, state: OneSidedState, *, weight: npt.ArrayLike, baseline_weight: npt.ArrayLike,
               outcomes: npt.ArrayLike, q_hat: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike] | None = None,
               ) -> tuple[OneSidedState, CanaryBounds]:
        """Add rows in time order: weights (n,) of π and π₀ and outcomes (n, M); the new state and each row's bounds.

        ``q_hat`` (doubly robust only): q̂(x, a) of the logged arm, q̂(x, π) and q̂(x, π₀), each (n, M) in [0, h].
        """
        w1, w0, r = self._checked(weight, baseline_weight, outcomes)
        if self.doubly_robust:
            q_a, q_1, q_0 = self._checked_q(q_hat, r.shape)
            res = r - q_a
            terms = np.hstack([q_1 + w1[:, None] * res, q_0 + w0[:, None] * res, q_1 - q_0 + (w1 - w0)[:, None] * res])
        elif q_hat is not None:
            raise EstimatorInputError("q_hat is given but this CanaryCS is not doubly_robust.")
        else:
            terms = np.hstack([w1[:, None] * r, w0[:, None] * r, (w1 - w0)[:, None] * r])
        low, high = self.ranges()
        terms = np.clip(terms, low, high)  # clip only rounding: inputs were checked
        state, b = OneSidedBernsteinCS(alpha=self.alpha, truncation=self.truncation).update(state, terms)
        m = r.shape[1]
        return state, CanaryBounds((b.low[:, :m], b.high[:, :m]), (b.low[:, m:2 * m], b.high[:, m:2 * m]),
                                   (b.low[:, 2 * m:], b.high[:, 2 * m:]), b.center[:, 2 * m:])

    def _checked_q(self, q_hat: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike] | None,
                   shape: tuple[int, ...]) -> tuple[FloatArray, FloatArray, FloatArray]:
        if q_hat is None or len(q_hat) != 3:
            raise EstimatorInputError("A doubly robust CanaryCS needs q_hat = (q̂ of the logged arm, q̂(x, π), q̂(x, π₀)).")
        arrays = tuple(np.asarray(q, dtype=np.float64) for q in q_hat)
        high = np.asarray(self.metric_high)
        for name, q in zip(("logged arm", "policy", "baseline"), arrays, strict=True):
            if q.shape != shape:
                raise EstimatorInputError(f"q_hat of the {name} must have shape {shape}. Got {q.shape}.")
            bad = ~(np.isfinite(q) & (q >= 0) & (q <= high)).all(axis=1)
            if bad.any():
                raise EstimatorInputError(f"{int(bad.sum())} rows have a q_hat of the {name} outside the metric's known "
                                          f"range [0, {list(self.metric_high)}] (first rows: {_first(bad)}).")
        return arrays  # type: ignore[return-value]

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
