"""Doubly robust estimators: DR, self-normalized DR, Switch-DR and DR with optimistic shrinkage."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from estimators._params import check_positive
from estimators.base import BaseEstimator, FloatArray, Prepared
from estimators.statistic import Terms
from estimators.tuning import SHRINKAGE_GRID, WEIGHT_GRID

__all__ = ["DR", "SNDR", "SwitchDR", "DRos"]


def _corrected(prep: Prepared, weight: FloatArray) -> Terms:
    """V = mean(Σ_a π q̂ + w̃ · (r − q̂(x, a_i))) for a transformed importance weight w̃."""
    assert prep.dm is not None and prep.q_logged is not None
    residual = weight[:, None] * (prep.rewards - prep.q_logged)
    return Terms(a=prep.dm + residual)


def _shrunk_weight(w: FloatArray, shrinkage: float) -> FloatArray:
    """λ w / (w² + λ); exactly 0 for λ = 0 (DM) even where w = 0."""
    if math.isinf(shrinkage):
        return w
    if shrinkage == 0:
        return np.zeros_like(w)
    return shrinkage * w / (w**2 + shrinkage)


@dataclass(frozen=True, slots=True, kw_only=True)
class DR(BaseEstimator):
    """Doubly robust: the direct method plus an importance-weighted correction of its residual.

    Notes
    -----
    Unbiased when either the propensities or q̂ are right (Dudík, Langford & Li, 2011).
    """

    name: ClassVar[str] = "DR"
    needs_q_hat: ClassVar[bool] = True

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        return _corrected(prep, prep.w)


@dataclass(frozen=True, slots=True, kw_only=True)
class SNDR(BaseEstimator):
    """Self-normalized DR, V = mean(Σ_a π q̂) + Σ w (r − q̂(x, a_i)) / Σ w."""

    name: ClassVar[str] = "SNDR"
    needs_q_hat: ClassVar[bool] = True

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        assert prep.dm is not None and prep.q_logged is not None
        w = np.broadcast_to(prep.w[:, None], prep.dm.shape)
        return Terms(a=prep.dm, b=w * (prep.rewards - prep.q_logged), c=np.array(w))


@dataclass(frozen=True, slots=True, kw_only=True)
class SwitchDR(BaseEstimator):
    """Switch-DR: keep the correction only where w ≤ threshold, else trust q̂ alone.

    Notes
    -----
    Wang, Agarwal & Dudík (2017), in the per-row form of Open Bandit Pipeline.
    ``threshold="auto"`` picks it per metric by estimated MSE (`estimators.tuning`).
    """

    threshold: float | str = math.inf
    name: ClassVar[str] = "SwitchDR"
    needs_q_hat: ClassVar[bool] = True
    grid: ClassVar[tuple[float, ...]] = WEIGHT_GRID

    def __post_init__(self) -> None:
        check_positive("SwitchDR", "threshold", self.threshold)

    def _setting(self) -> float | str:
        return self.threshold

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        threshold = math.inf if level is None else level
        return _corrected(prep, np.where(prep.w <= threshold, prep.w, 0.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class DRos(BaseEstimator):
    """DR with optimistic shrinkage: w → λ w / (w² + λ).

    Notes
    -----
    Su, Dimakopoulou, Krishnamurthy & Dudík (2020). λ = inf is DR, λ = 0 is DM.
    ``shrinkage="auto"`` picks λ per metric by estimated MSE (`estimators.tuning`).
    """

    shrinkage: float | str = math.inf
    name: ClassVar[str] = "DRos"
    needs_q_hat: ClassVar[bool] = True
    grid: ClassVar[tuple[float, ...]] = SHRINKAGE_GRID

    def __post_init__(self) -> None:
        check_positive("DRos", "shrinkage", self.shrinkage, allow_zero=True)

    def _setting(self) -> float | str:
        return self.shrinkage

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        return _corrected(prep, _shrunk_weight(prep.w, math.inf if level is None else level))

    def _n_modified(self, w: FloatArray, level: float) -> int:
        return int((_shrunk_weight(w, level) < 0.99 * w).sum())
