"""Hyperparameters (clip, switch threshold, shrinkage) chosen from the data over a fixed grid.

Each candidate level λ is scored by an estimated MSE: its variance plus a debiased squared bias,
the bias measured against the untransformed (unbiased) estimator on the same rows,

    MSE(λ) ≈ Var(V_λ) + max(0, (V_λ − V_∞)² − Var(V_λ − V_∞)),

with paired delta-method variances (the estimated-MSE criterion of Su et al., 2020, with an
empirical bias term). The grid is fixed, not data-dependent, so every candidate is accumulated in
the same pass as mergeable sums and the choice does not depend on how the log is split. The level
is chosen per metric and reported in the diagnostics.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from estimators.inference import delta_variance
from estimators.reduction import Sums
from estimators.statistic import Statistic

__all__ = ["WEIGHT_GRID", "SHRINKAGE_GRID", "estimated_mse"]

#: candidate clip levels and switch thresholds (importance weights); inf is always added
WEIGHT_GRID: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
#: candidate DRos shrinkage levels λ; inf (plain DR) is always added
SHRINKAGE_GRID: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 1e4, 1e5)


def _same(columns: npt.NDArray[np.int64], m: int) -> npt.NDArray[np.int64]:
    return np.repeat(columns[:, None], m, axis=1)


def estimated_mse(sums: Sums, stat: Statistic, n_units: int, unit: int) -> npt.NDArray[np.float64]:
    """Estimated MSE of each level per metric, shape (U, M).

    Each level's columns form a unit of ``unit`` columns (the statistic uses its first
    ``stat.width``); the last unit is the untransformed reference.
    """
    j = stat.width
    m = sums.total.shape[0]
    ref = np.arange(j) + (n_units - 1) * unit
    out = np.empty((n_units, m))
    for u in range(n_units):
        cols = np.arange(j) + u * unit
        var = delta_variance(stat, sums.select(_same(cols, m), third=False))
        if u == n_units - 1:
            out[u] = var
            continue
        both = sums.select(_same(np.concatenate([cols, ref]), m), third=False)
        means = both.means
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = stat.combine(means[:j]) - stat.combine(means[j:])
            grad = np.concatenate([stat.gradient(means[:j]), -stat.gradient(means[j:])])
        out[u] = var + np.maximum(0.0, diff**2 - both.variance(grad))
    return np.where(np.isfinite(out), out, np.inf)
