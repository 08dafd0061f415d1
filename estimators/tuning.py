"""Hyperparameters (clip, switch threshold, shrinkage) chosen from the data over a fixed grid.

Each candidate's MSE is estimated as its variance plus a debiased squared bias, the bias measured
against the untransformed (unbiased) estimator on the same rows:

    MSE(λ) ≈ Var(V_λ) + max(0, (V_λ − V_∞)² − Var(V_λ − V_∞)),

with paired, delta-method variances (the estimated-MSE criterion of Su et al., 2020, with an
empirical bias term). The grid is fixed, not data-dependent, so all candidates can be evaluated in
one pass over the rows and the choice is the same however the log is split. The choice is made
per metric and reported in the diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from estimators.base import FloatArray, Prepared
from estimators.inference import influence_variance
from estimators.statistic import Statistic, Terms

__all__ = ["WEIGHT_GRID", "SHRINKAGE_GRID", "choose", "tuned_terms", "n_above", "AUTO"]

AUTO = "auto"
#: candidate clip levels and switch thresholds (importance weights)
WEIGHT_GRID: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0, math.inf)
#: candidate DRos shrinkage levels λ
SHRINKAGE_GRID: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 1e4, 1e5, math.inf)


def choose(
    prep: Prepared,
    grid: tuple[float, ...],
    make: Callable[[Prepared, float], Terms],
    modified: Callable[[FloatArray, float], int],
) -> Terms:
    """Terms built column by column from the candidate with the smallest estimated MSE per metric."""
    reference = make(prep, math.inf)
    candidates = [make(prep, value) for value in grid]
    mse = np.empty((len(grid), prep.rewards.shape[1]))
    for i, terms in enumerate(candidates):
        own = influence_variance(Statistic(terms))
        paired = Statistic(terms, reference, "difference")
        bias2 = np.maximum(0.0, paired.point() ** 2 - influence_variance(paired))
        mse[i] = own + bias2
    best = np.nanargmin(np.where(np.isfinite(mse), mse, np.inf), axis=0)
    cols = np.arange(mse.shape[1])
    pick = lambda part: np.stack([getattr(c, part) for c in candidates])[best, :, cols].T  # noqa: E731
    chosen = tuple(float(grid[b]) for b in best)
    return Terms(
        a=pick("a"),
        b=pick("b"),
        c=pick("c"),
        weights=prep.weights,
        hyperparameter=chosen,
        n_modified=max(modified(prep.w, v) for v in chosen),
    )


def tuned_terms(
    prep: Prepared,
    value: float | str,
    grid: tuple[float, ...],
    make: Callable[[Prepared, float], Terms],
    modified: Callable[[FloatArray, float], int],
) -> Terms:
    """Terms at a fixed hyperparameter, or at the data-chosen one when ``value`` is "auto"."""
    if value == AUTO:
        return choose(prep, grid, make, modified)
    level = float(value)
    terms = make(prep, level)
    return replace(terms, hyperparameter=None if math.isinf(level) else level, n_modified=modified(prep.w, level))


def n_above(w: FloatArray, level: float) -> int:
    """Rows whose importance weight exceeds ``level`` (clipped, or switched off)."""
    return int((w > level).sum())
