"""Interval strategies: turn a `Statistic` into a standard error and confidence intervals.

Separate from the estimators (EconML's split of estimation and inference): any estimator's value,
difference or relative change gets a normal (delta-method), bootstrap or empirical-Bernstein
interval from the same per-row terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from estimators.resample import poisson_weight_sums
from estimators.statistic import Statistic

__all__ = ["Inference", "IntervalFit", "Normal", "Bootstrap", "EmpiricalBernstein"]

FloatArray = npt.NDArray[np.float64]


class IntervalFit(Protocol):
    """A fitted interval: standard error and a confidence interval at any level."""

    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]: ...


class Inference(Protocol):
    """An interval strategy."""

    name: str

    def fit(self, statistic: Statistic, value: FloatArray, keys: npt.NDArray[np.uint64]) -> IntervalFit: ...


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        msg = f"alpha must be a float in (0, 1). Got {alpha!r} instead."
        raise ValueError(msg)


def _rows(weights: FloatArray) -> FloatArray:
    """Number of rows with positive weight, per metric."""
    return (weights > 0).sum(axis=0).astype(np.float64)


def influence_variance(statistic: Statistic) -> FloatArray:
    """Delta-method variance Σ W² ψ² / (Σ W)² with the n / (n − 1) small-sample correction."""
    w = statistic.weights
    psi = statistic.influence()
    n = _rows(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (w**2 * psi**2).sum(axis=0) / w.sum(axis=0) ** 2 * n / (n - 1)
    return var


@dataclass(frozen=True, slots=True)
class NormalFit:
    """value ± z · stderr."""

    value: FloatArray
    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        _check_alpha(alpha)
        z = NormalDist().inv_cdf(1 - alpha / 2)
        return self.value - z * self.stderr, self.value + z * self.stderr


@dataclass(frozen=True, slots=True, kw_only=True)
class Normal:
    """Normal interval from the influence-function (delta-method) variance."""

    name: str = "normal"

    def fit(self, statistic: Statistic, value: FloatArray, keys: npt.NDArray[np.uint64]) -> NormalFit:
        return NormalFit(value=value, stderr=np.sqrt(influence_variance(statistic)))


@dataclass(frozen=True, slots=True)
class BootstrapFit:
    """Percentile interval of bootstrap replicates (B, M)."""

    value: FloatArray
    replicates: FloatArray
    stderr: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        _check_alpha(alpha)
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
        if not isinstance(self.n_replicates, int) or self.n_replicates < 2:
            msg = f"The 'n_replicates' parameter of Bootstrap must be an int >= 2. Got {self.n_replicates!r} instead."
            raise ValueError(msg)

    def fit(self, statistic: Statistic, value: FloatArray, keys: npt.NDArray[np.uint64]) -> BootstrapFit:
        w = statistic.weights
        cols = statistic.columns()
        n, j, m = cols.shape
        data = np.concatenate([(w[:, None, :] * cols).reshape(n, j * m), w], axis=1)
        sums = poisson_weight_sums(keys, data, self.n_replicates, seed=self.seed)
        num = sums[:, : j * m].reshape(-1, j, m)
        den = sums[:, j * m :]
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = statistic.combine(num / den[:, None, :])
        return BootstrapFit(value=value, replicates=reps, stderr=np.nanstd(reps, axis=0, ddof=1))


@dataclass(frozen=True, slots=True)
class BernsteinFit:
    """Empirical-Bernstein bound (Maurer & Pontil, 2009) on the linearized per-row values."""

    value: FloatArray
    stderr: FloatArray
    variance: FloatArray
    value_range: FloatArray
    n_eff: FloatArray

    def ci(self, alpha: float) -> tuple[FloatArray, FloatArray]:
        _check_alpha(alpha)
        log_term = math.log(4.0 / alpha)  # two-sided: δ = α/2 on each side
        half = np.sqrt(2 * self.variance * log_term / self.n_eff) + 7 * self.value_range * log_term / (
            3 * (self.n_eff - 1)
        )
        return self.value - half, self.value + half


@dataclass(frozen=True, slots=True, kw_only=True)
class EmpiricalBernstein:
    """A conservative high-confidence interval for "safe to roll out" decisions.

    Notes
    -----
    Applies the empirical-Bernstein inequality (Maurer & Pontil, 2009, Thm 4) to the pseudo-values
    θ + ψ_i, with the range R taken from the data and n the Kish effective size of the row weights.
    For self-normalized statistics it is the bound of their linearization.
    """

    name: str = "bernstein"

    def fit(self, statistic: Statistic, value: FloatArray, keys: npt.NDArray[np.uint64]) -> BernsteinFit:
        w = statistic.weights
        psi = statistic.influence()
        total = w.sum(axis=0)
        n_eff = total**2 / (w**2).sum(axis=0)
        pseudo = np.where(w > 0, value[None, :] + psi, np.nan)
        var = (w * psi**2).sum(axis=0) / total * n_eff / (n_eff - 1)
        value_range = np.nanmax(pseudo, axis=0) - np.nanmin(pseudo, axis=0)
        return BernsteinFit(
            value=value,
            stderr=np.sqrt(influence_variance(statistic)),
            variance=var,
            value_range=value_range,
            n_eff=n_eff,
        )
