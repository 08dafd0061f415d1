"""Anytime-valid confidence sequences: the predictable plug-in empirical-Bernstein CS, sequentially updated.

A confidence sequence (C_t) covers the mean at *every* t at once, P(∃ t: μ ∉ C_t) ≤ α, so it may be
looked at after every row and acted on whenever it decides; a fixed-n interval looked at hourly is not.

Notes
-----
The predictable plug-in empirical-Bernstein CS (PrPl-EB) of Waudby-Smith & Ramdas, "Estimating
means of bounded random variables by betting", JRSS-B 2024 (arXiv:2010.09686), Theorem 2, for
observations x_i ∈ [0, 1] with conditional mean μ (or the λ-weighted average of time-varying
conditional means):

    C_t = ( Σ λ_i x_i / Σ λ_i ) ± ( log(2/α) + Σ v_i ψ_E(λ_i) ) / Σ λ_i,

    v_i = 4 (x_i − μ̂_{i−1})²,   ψ_E(λ) = (−log(1 − λ) − λ) / 4,
    λ_t = min( c, sqrt( 2 log(2/α) / (σ̂²_{t−1} t log(1 + t)) ) ),   c = 1/2,
    μ̂_t = (1/2 + Σ_{i≤t} x_i) / (t + 1),   σ̂²_t = (1/4 + Σ_{i≤t} (x_i − μ̂_i)²) / (t + 1).

(`confseq.predmix.predmix_empbern_cs`, by the same authors, computes the same boundary.) λ_t and
μ̂_{t−1} use only earlier rows, so the state after row t is six running sums per stream, and updating
batch by batch gives the rows' bounds exactly as one pass would (to rounding). Bounds are clipped to
[0, 1]; ``best_low`` / ``best_high`` keep the running intersection, itself a confidence sequence.

Sequential by nature, like replay: these sums are carried forward in time, not merged across workers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Bounds", "EmpiricalBernsteinCS", "SequenceState", "check_levels", "checked_rows"]


def check_levels(cs: object) -> None:
    """A confidence sequence's ``alpha`` and ``truncation`` are floats in (0, 1); the error names the class."""
    for name in ("alpha", "truncation"):
        value = getattr(cs, name)
        if not (isinstance(value, float) and 0.0 < value < 1.0):
            raise ValueError(f"The '{name}' parameter of {type(cs).__name__} must be a float in (0, 1). Got {value!r} instead.")


FloatArray = npt.NDArray[np.float64]


def checked_rows(x: npt.ArrayLike, low: FloatArray, high: FloatArray, bounds: str) -> FloatArray:
    """Observations ``x`` as an (n, m) float array, m = len(low), each finite and within [low, high]; a ValueError
    otherwise (``bounds`` says where they must lie)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != low.shape[0]:
        msg = f"x must have shape (n, {low.shape[0]}). Got {x.shape} instead."
        raise ValueError(msg)
    if x.size and not (np.isfinite(x).all() and (x >= low).all() and (x <= high).all()):
        msg = f"Observations of a confidence sequence {bounds}."
        raise ValueError(msg)
    return x


_FIELDS = ("sum_x", "sum_sq", "sum_lam", "sum_lam_x", "sum_vpsi", "best_low", "best_high")


@dataclass(frozen=True, slots=True)
class SequenceState:
    """Where m confidence sequences stand after ``t`` rows: running sums, each shape (m,)."""

    t: int
    sum_x: FloatArray
    sum_sq: FloatArray
    sum_lam: FloatArray
    sum_lam_x: FloatArray
    sum_vpsi: FloatArray
    best_low: FloatArray
    best_high: FloatArray

    @classmethod
    def start(cls, m: int) -> SequenceState:
        """The state before any row, for ``m`` streams."""
        zero = np.zeros(m)
        return cls(0, zero, zero, zero, zero, zero, zero, np.ones(m))

    def to_dict(self) -> dict[str, object]:
        """Plain-Python form for a JSON state file (floats round-trip exactly through ``repr``)."""
        out = asdict(self)
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SequenceState:
        """The state ``to_dict`` wrote."""
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in _FIELDS}
        return cls(int(data["t"]), **arrays)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Per-row bounds of a batch, shape (n, m): the CS at each row and its running intersection."""

    low: FloatArray
    high: FloatArray
    center: FloatArray


@dataclass(frozen=True, slots=True, kw_only=True)
class EmpiricalBernsteinCS:
    """Two-sided PrPl-EB confidence sequence at level 1 − ``alpha`` for means of observations in [0, 1].

    Examples
    --------
    >>> cs = EmpiricalBernsteinCS(alpha=0.05)
    >>> state, bounds = cs.update(cs.start(1), np.full((1000, 1), 0.5))
    >>> bool(bounds.low[-1, 0] < 0.5 < bounds.high[-1, 0])
    True
    """

    alpha: float = 0.05
    truncation: float = 0.5

    def __post_init__(self) -> None:
        check_levels(self)

    def start(self, m: int) -> SequenceState:
        """The state before any row, for ``m`` streams."""
        return SequenceState.start(m)

    def update(self, state: SequenceState, x: npt.ArrayLike) -> tuple[SequenceState, Bounds]:
        """Add rows ``x`` (n, m), each in [0, 1], in order; the new state and every row's bounds."""
        x = checked_rows(x, np.zeros_like(state.sum_x), np.ones_like(state.sum_x),
                         "must lie in [0, 1] (rescale by their known bounds first)")
        if x.shape[0] == 0:
            empty = np.empty((0, x.shape[1]))
            return state, Bounds(empty, empty, empty)
        t = state.t + np.arange(1, x.shape[0] + 1, dtype=np.float64)[:, None]
        cum_x = state.sum_x + np.cumsum(x, axis=0)
        mu = (0.5 + cum_x) / (t + 1)
        mu_prev = np.vstack([(0.5 + state.sum_x) / (state.t + 1), mu[:-1]])
        sq = state.sum_sq + np.cumsum((x - mu) ** 2, axis=0)
        sigma2_prev = np.vstack([(0.25 + state.sum_sq) / (state.t + 1), ((0.25 + sq) / (t + 1))[:-1]])
        log_term = math.log(2.0 / self.alpha)
        lam = np.minimum(self.truncation, np.sqrt(2.0 * log_term / (sigma2_prev * t * np.log1p(t))))
        psi = (-np.log1p(-lam) - lam) / 4.0
        sum_lam = state.sum_lam + np.cumsum(lam, axis=0)
        sum_lam_x = state.sum_lam_x + np.cumsum(lam * x, axis=0)
        sum_vpsi = state.sum_vpsi + np.cumsum(4.0 * (x - mu_prev) ** 2 * psi, axis=0)
        center = sum_lam_x / sum_lam
        margin = (log_term + sum_vpsi) / sum_lam
        low = np.maximum.accumulate(np.vstack([state.best_low, np.clip(center - margin, 0.0, 1.0)]), axis=0)[1:]
        high = np.minimum.accumulate(np.vstack([state.best_high, np.clip(center + margin, 0.0, 1.0)]), axis=0)[1:]
        new = SequenceState(int(state.t + x.shape[0]), cum_x[-1], sq[-1], sum_lam[-1],
                            sum_lam_x[-1], sum_vpsi[-1], low[-1], high[-1])
        return new, Bounds(low=low, high=high, center=center)
