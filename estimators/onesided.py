"""Anytime-valid confidence sequences whose two sides each pay only for their own side's range.

The two-sided PrPl-EB sequence of `estimators.sequence` rescales observations to [0, 1] by their
whole range and caps the bet at 1/2. An importance-weighted term is lopsided: the cost difference of
a 5 % canary lies in [−1.05 h, 20 h], so its *lower* bound needs only the short side (1.05 h) while
its upper bound needs the long one. Here each side is its own test martingale, scaled by its own
predictable distance from the centre to the known bound it guards against, with the bet capped at
``truncation`` (< 1) rather than 1/2.

Notes
-----
Fan's inequality, exp(λξ − ψ_E(λ) ξ²) ≤ 1 + λξ for ξ ≥ −1 and λ ∈ [0, 1) with
ψ_E(λ) = −log(1 − λ) − λ, makes, for observations x_i ≥ L with conditional mean μ,

    M_t = Π exp( λ_i (x_i − μ)/S_i − ψ_E(λ_i) ξ_i² ),   ξ_i = (x_i − c_i)/S_i ≥ −1,

a non-negative supermartingale whenever the centre c_i ∈ [L, H] and the scale S_i ≥ c_i − L are
predictable (Waudby-Smith & Ramdas, JRSS-B 2024, proof of Thm 2, with the bet λ_i/S_i in the
observations' own units). Ville's inequality at α/2 gives the lower side

    μ ≥ ( Σ β_i x_i − log(2/α) − Σ ψ_E(λ_i) ξ_i² ) / Σ β_i,   β_i = λ_i / S_i,

and −x (bounded by −H) the upper side; together a two-sided sequence at level 1 − α. Here
c_i = clip(Σ_{j<i} x_j / i, L, H), S_i = c_i − L for the lower side (H − c_i for the upper),
λ_i = min(truncation, S_i √(2 log(2/α) / (σ̂²_{i−1} i log(1 + i)))) with
σ̂²_i = (((H − L)/2)² + Σ_{j≤i} (x_j − Σ_{k≤j} x_k/(j + 1))²) / (i + 1), the PrPl tuning of
Thm 2 in the observations' units. All terms are running sums, so batches give the bounds of one
pass (to rounding); bounds are clipped to [L, H] and intersected over time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from estimators.sequence import Bounds, check_levels, checked_rows

__all__ = ["OneSidedBernsteinCS", "OneSidedState"]

FloatArray = npt.NDArray[np.float64]
_FIELDS = ("low", "high", "sum_x", "sum_sq", "lo_beta", "lo_beta_x", "lo_pen", "hi_beta", "hi_beta_x", "hi_pen",
           "best_low", "best_high")


@dataclass(frozen=True, slots=True)
class OneSidedState:
    """Where m sequences stand after ``t`` rows: their known bounds and running sums, each shape (m,)."""

    t: int
    low: FloatArray
    high: FloatArray
    sum_x: FloatArray
    sum_sq: FloatArray
    lo_beta: FloatArray
    lo_beta_x: FloatArray
    lo_pen: FloatArray
    hi_beta: FloatArray
    hi_beta_x: FloatArray
    hi_pen: FloatArray
    best_low: FloatArray
    best_high: FloatArray

    @classmethod
    def start(cls, low: npt.ArrayLike, high: npt.ArrayLike) -> OneSidedState:
        """The state before any row, for observations known to lie in [low, high] (each (m,))."""
        lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape or not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
            msg = f"low and high must be finite (m,) arrays with high > low. Got {lo!r} and {hi!r}."
            raise ValueError(msg)
        zero = np.zeros_like(lo)
        return cls(0, lo, hi, zero, zero, zero, zero, zero, zero, zero, zero, lo, hi)

    def to_dict(self) -> dict[str, object]:
        """Plain-Python form for a JSON state file (floats round-trip exactly)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> OneSidedState:
        """The state ``to_dict`` wrote."""
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in _FIELDS}
        return cls(int(data["t"]), **arrays)  # type: ignore[call-overload]


def _psi(lam: FloatArray) -> FloatArray:
    return -np.log1p(-lam) - lam


@dataclass(frozen=True, slots=True, kw_only=True)
class OneSidedBernsteinCS:
    """Two-sided confidence sequence at level 1 − ``alpha``, each side a one-sided PrPl-EB test at α/2.

    Examples
    --------
    >>> cs = OneSidedBernsteinCS(alpha=0.05)
    >>> state, b = cs.update(OneSidedState.start([-1.0], [20.0]), np.full((2000, 1), 0.5))
    >>> bool(b.low[-1, 0] < 0.5 < b.high[-1, 0]) and bool(0.5 - b.low[-1, 0] < b.high[-1, 0] - 0.5)
    True
    """

    alpha: float = 0.05
    truncation: float = 0.9

    def __post_init__(self) -> None:
        check_levels(self)

    def update(self, state: OneSidedState, x: npt.ArrayLike) -> tuple[OneSidedState, Bounds]:
        """Add rows ``x`` (n, m), each within the state's [low, high], in order; the new state and every row's bounds."""
        lo, hi = state.low, state.high
        x = checked_rows(x, lo, hi, "must lie within their known bounds [low, high]")
        if x.shape[0] == 0:
            empty = np.empty((0, x.shape[1]))
            return state, Bounds(empty, empty, empty)
        t = state.t + np.arange(1, x.shape[0] + 1, dtype=np.float64)[:, None]
        cum_x = state.sum_x + np.cumsum(x, axis=0)
        centre = np.clip(np.vstack([state.sum_x, cum_x[:-1]]) / t, lo, hi)
        sq = state.sum_sq + np.cumsum((x - cum_x / (t + 1)) ** 2, axis=0)
        sigma2 = np.vstack([((hi - lo) / 2) ** 2 + state.sum_sq, (((hi - lo) / 2) ** 2 + sq)[:-1]]) / t
        log_term = math.log(2.0 / self.alpha)
        per_scale = np.sqrt(2.0 * log_term / (sigma2 * t * np.log1p(t)))
        sides = []
        for scale, sign in ((np.maximum(centre - lo, 1e-9 * (hi - lo)), 1.0), (np.maximum(hi - centre, 1e-9 * (hi - lo)), -1.0)):
            lam = np.minimum(self.truncation, scale * per_scale)
            beta = lam / scale
            xi = sign * (x - centre) / scale
            sides.append((np.cumsum(beta, axis=0), np.cumsum(beta * x, axis=0), np.cumsum(_psi(lam) * xi**2, axis=0)))
        (lb, lbx, lp), (hb, hbx, hp) = sides
        lb, lbx, lp = state.lo_beta + lb, state.lo_beta_x + lbx, state.lo_pen + lp
        hb, hbx, hp = state.hi_beta + hb, state.hi_beta_x + hbx, state.hi_pen + hp
        low = np.maximum.accumulate(np.vstack([state.best_low, np.clip((lbx - log_term - lp) / lb, lo, hi)]), axis=0)[1:]
        high = np.minimum.accumulate(np.vstack([state.best_high, np.clip((hbx + log_term + hp) / hb, lo, hi)]), axis=0)[1:]
        new = OneSidedState(int(state.t + x.shape[0]), lo, hi, cum_x[-1], sq[-1], lb[-1], lbx[-1], lp[-1], hb[-1], hbx[-1],
                            hp[-1], low[-1], high[-1])
        return new, Bounds(low=low, high=high, center=cum_x / t)
