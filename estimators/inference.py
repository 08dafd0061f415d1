"""Interval strategies: turn a statistic's `Sums` into a standard error and confidence intervals.

Separate from the estimators (EconML's split of estimation and inference): any estimator's value,
difference or relative change gets a normal (delta-method), bootstrap or empirical-Bernstein
interval from the same mergeable sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from estimators.reduction import Sums
from estimators.statistic import Statistic

__all__ = ["Inference", "IntervalFit", "Normal", "SkewCorrected", "Bootstrap", "EmpiricalBernstein"]

FloatArray = npt.NDArray[np.float64]


class IntervalFit(Protocol):
    """A fitted interval: standard error and a confidence interval at any level."""

    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]: ...


class Inference(Protocol):
    """An interval strategy. ``n_boot`` > 0 asks for bootstrap sums while accumulating, ``arm_sums`` for the per-arm
    sums of an arm-pooled variance (`estimators.armpooled`)."""

    name: str
    n_boot: int
    seed: int
    arm_sums: ClassVar[bool]

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
    arm_sums: ClassVar[bool] = False

    def fit(self, statistic: Statistic, sums: Sums) -> NormalFit:
        value = statistic.combine(sums.means)
        return NormalFit(value=value, stderr=np.sqrt(delta_variance(statistic, sums)))


def _hall_inverse(u: float, skew: FloatArray) -> FloatArray:
    """t with g(t) = u for Hall's g(t) = t + κt²/3 + κ²t³/27 + κ/6 = ((1 + κt/3)³ − 1)/κ + κ/6 (monotone in t)."""
    v = u - skew / 6
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.cbrt(1 + skew * v) - 1) / (skew / 3)
    return np.where(np.abs(skew) < 1e-12, v, t)


@dataclass(frozen=True, slots=True)
class SkewFit:
    """Hall's skewness-corrected interval {θ : |g((θ̂ − θ) / se)| ≤ z} (κ the estimate's skewness), never
    shorter than the normal interval on either side."""

    value: FloatArray
    stderr: FloatArray
    skew: FloatArray
    method: ClassVar[str] = "skew-corrected"

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        check_alpha(alpha)
        z = NormalDist().inv_cdf(1 - alpha / 2)
        low = self.value - self.stderr * np.maximum(_hall_inverse(z, self.skew), z)
        high = self.value - self.stderr * np.minimum(_hall_inverse(-z, self.skew), -z)
        return low, high


@dataclass(frozen=True, slots=True, kw_only=True)
class SkewCorrected:
    """Normal interval corrected for the estimate's skewness (Hall, 1992): for heavy-tailed metrics.

    Notes
    -----
    With ψ_i the linearized per-row values (as for `Normal`) and κ = Σ W³ψ³ / (Σ W²ψ²)^{3/2} the
    estimate's skewness (unbiased-cumulant factors n²/((n−1)(n−2)) and n/(n−1) with n the rows with
    weight), the studentized T = (θ̂ − θ)/se has skewness ≈ −2κ and mean ≈ −κ/2 (Edgeworth). Hall's
    monotone cubic g(T) = T + κT²/3 + κ²T³/27 + κ/6 removes both, and the interval is
    [θ̂ − se·g⁻¹(z), θ̂ − se·g⁻¹(−z)]: for a right-skewed metric (rare long requests, large weights)
    it reaches further up. Neither side is drawn in closer than the normal interval's θ̂ ± z·se:
    κ estimated from a few heavy rows is noisy, and the cubic's inverse then pulls the other side
    in (in a prototype on the simulator, DR's paired TTFT difference lost coverage). κ needs
    third moments of the columns, kept as mergeable sums (`estimators.moments3`). With κ = 0 it is
    the normal interval. Coverage on the simulator: `docs/experiments/coverage.md`.

    Hall, P. (1992). On the removal of skewness by transformation. JRSS B 54(1), 221–228.
    """

    name: str = "skew-corrected"
    n_boot: int = 0
    seed: int = 0
    arm_sums: ClassVar[bool] = False

    def fit(self, statistic: Statistic, sums: Sums) -> SkewFit:
        if sums.third is None:
            raise ValueError("These sums were accumulated without the third moments a skew-corrected interval needs.")
        grad = statistic.gradient(sums.means)
        quad = np.einsum("am,abm,bm->m", grad, sums.covariance(), grad)
        n = sums.count
        with np.errstate(divide="ignore", invalid="ignore"):
            k2 = quad * n / (n - 1)
            k3 = sums.third.cubed(grad) * n**2 / ((n - 1) * (n - 2))
            skew = np.where(k2 > 0, k3 / np.maximum(k2, 0.0) ** 1.5, 0.0)
        return SkewFit(value=statistic.combine(sums.means), stderr=np.sqrt(delta_variance(statistic, sums)),
                       skew=np.nan_to_num(skew, nan=0.0, posinf=0.0, neginf=0.0))


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
    arm_sums: ClassVar[bool] = False

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
    arm_sums: ClassVar[bool] = False

    def fit(self, statistic: Statistic, sums: Sums) -> BernsteinFit:
        grad = statistic.gradient(sums.means)
        value_range = (np.abs(grad) * (sums.high - sums.low)).sum(axis=0)
        return BernsteinFit(
            value=statistic.combine(sums.means),
            stderr=np.sqrt(delta_variance(statistic, sums)),
            value_range=value_range,
            n_eff=sums.total**2 / sums.total2,
        )
