"""Interval strategies: turn a statistic's `Sums` into a standard error and confidence intervals.

Separate from the estimators (EconML's split of estimation and inference): any estimator's value,
difference or relative change gets a normal (delta-method), bootstrap or empirical-Bernstein
interval from the same mergeable sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from estimators.reduction import Sums
from estimators.statistic import Statistic

__all__ = ["Inference", "IntervalFit", "Normal", "Bootstrap", "EmpiricalBernstein"]

FloatArray = npt.NDArray[np.float64]


class IntervalFit(Protocol):
    """A fitted interval: standard error and a confidence interval at any level."""

    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]: ...


class Inference(Protocol):
    """An interval strategy. ``n_boot`` > 0 asks for bootstrap sums while accumulating."""

    name: str
    n_boot: int
    seed: int

    def fit(self, statistic: Statistic, sums: Sums) -> IntervalFit: ...


def check_alpha(alpha: float) -> None:
    """Raise unless 0 < alpha < 1."""
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        msg = f"alpha must be a float in (0, 1). Got {alpha!r} instead."
        raise ValueError(msg)


def delta_variance(statistic: Statistic, sums: Sums) -> FloatArray:
    """Delta-method (influence-function) variance of the statistic, shape (M,)."""
    return sums.variance(statistic.gradient(sums.means))


@dataclass(frozen=True, slots=True)
class NormalFit:
    """value ± z · stderr."""

    value: FloatArray
    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        check_alpha(alpha)
        z = NormalDist().inv_cdf(1 - alpha / 2)
        return self.value - z * self.stderr, self.value + z * self.stderr


@dataclass(frozen=True, slots=True, kw_only=True)
class Normal:
    """Normal interval from the influence-function (delta-method) variance."""

    name: str = "normal"
    n_boot: int = 0
    seed: int = 0

    def fit(self, statistic: Statistic, sums: Sums) -> NormalFit:
        value = statistic.combine(sums.means)
        return NormalFit(value=value, stderr=np.sqrt(delta_variance(statistic, sums)))


@dataclass(frozen=True, slots=True)
class BootstrapFit:
    """Percentile interval of bootstrap replicates (B, M)."""

    value: FloatArray
    replicates: FloatArray
    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        check_alpha(alpha)
        low, high = np.nanquantile(self.replicates, [alpha / 2, 1 - alpha / 2], axis=0)
        return low, high


@dataclass(frozen=True, slots=True, kw_only=True)
class Bootstrap:
    """Poisson(1) bootstrap, vectorized, with every normalizer recomputed in each replicate.

    Multipliers derive from each row's key and the replicate index (`estimators.resample`), so the
    replicates do not depend on row order or on how rows are split across batches.
    """

    n_replicates: int = 1000
    seed: int = 0
    name: str = "bootstrap"

    def __post_init__(self) -> None:
        if not isinstance(self.n_replicates, int) or isinstance(self.n_replicates, bool) or self.n_replicates < 2:
            msg = f"The 'n_replicates' parameter of Bootstrap must be an int >= 2. Got {self.n_replicates!r} instead."
            raise ValueError(msg)

    @property
    def n_boot(self) -> int:
        return self.n_replicates

    def fit(self, statistic: Statistic, sums: Sums) -> BootstrapFit:
        if sums.boot is None or sums.boot_total is None or sums.boot.shape[0] != self.n_replicates:
            raise ValueError("These sums were accumulated without the bootstrap this strategy asks for.")
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = statistic.combine(sums.boot / sums.boot_total[:, None, :])
        value = statistic.combine(sums.means)
        return BootstrapFit(value=value, replicates=reps, stderr=np.nanstd(reps, axis=0, ddof=1))


@dataclass(frozen=True, slots=True)
class BernsteinFit:
    """Empirical-Bernstein bound (Maurer & Pontil, 2009) on the linearized per-row values."""

    value: FloatArray
    stderr: FloatArray
    value_range: FloatArray
    n_eff: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        check_alpha(alpha)
        log_term = math.log(4.0 / alpha)  # two-sided: δ = α/2 on each side
        half = self.stderr * math.sqrt(2 * log_term) + 7 * self.value_range * log_term / (3 * (self.n_eff - 1))
        return self.value - half, self.value + half


@dataclass(frozen=True, slots=True, kw_only=True)
class EmpiricalBernstein:
    """A conservative high-confidence interval for "safe to roll out" decisions.

    Notes
    -----
    The empirical-Bernstein inequality (Maurer & Pontil, 2009, Thm 4) applied to the linearized
    per-row values θ + ψ_i: half-width sqrt(2 V ln(4/α) / n) + 7 R ln(4/α) / (3 (n − 1)), with
    V / n the delta-method variance, n the Kish effective size of the row weights and R a bound on
    the range of ψ_i (Σ_j |∂θ/∂X̄_j| · range of column j), which keeps it a mergeable reduction.
    """

    name: str = "bernstein"
    n_boot: int = 0
    seed: int = 0

    def fit(self, statistic: Statistic, sums: Sums) -> BernsteinFit:
        grad = statistic.gradient(sums.means)
        value_range = (np.abs(grad) * (sums.high - sums.low)).sum(axis=0)
        return BernsteinFit(
            value=statistic.combine(sums.means),
            stderr=np.sqrt(delta_variance(statistic, sums)),
            value_range=value_range,
            n_eff=sums.total**2 / sums.total2,
        )
