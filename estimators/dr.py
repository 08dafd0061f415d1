"""Doubly robust estimators: DR, self-normalized DR, Switch-DR and DR with optimistic shrinkage."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from estimators._params import check_positive
from estimators.base import BaseEstimator, FloatArray, Prepared
from estimators.statistic import Terms
from estimators.tuning import SHRINKAGE_GRID, WEIGHT_GRID, n_above, tuned_terms

__all__ = ["DR", "SNDR", "SwitchDR", "DRos"]


def _corrected(prep: Prepared, weight: FloatArray) -> Terms:
    """V = mean(Σ_a π q̂ + w̃ · (r − q̂(x, a_i))) for a transformed importance weight w̃."""
    assert prep.dm is not None and prep.q_logged is not None
    residual = weight[:, None] * (prep.rewards - prep.q_logged)
    zeros = np.zeros_like(prep.dm)
    return Terms(a=prep.dm + residual, b=zeros, c=np.ones_like(prep.dm), weights=prep.weights)


def _switched(prep: Prepared, threshold: float) -> Terms:
    return _corrected(prep, np.where(prep.w <= threshold, prep.w, 0.0))


def _shrunk_weight(w: FloatArray, shrinkage: float) -> FloatArray:
    return w if math.isinf(shrinkage) else shrinkage * w / (w**2 + shrinkage)


def _shrunk(prep: Prepared, shrinkage: float) -> Terms:
    return _corrected(prep, _shrunk_weight(prep.w, shrinkage))


def _n_shrunk(w: FloatArray, shrinkage: float) -> int:
    return int((_shrunk_weight(w, shrinkage) < 0.99 * w).sum())


@dataclass(frozen=True, slots=True, kw_only=True)
class DR(BaseEstimator):
    """Doubly robust: the direct method plus an importance-weighted correction of its residual.

    Notes
    -----
    Unbiased when either the propensities or q̂ are right (Dudík, Langford & Li, 2011).
    """

    name: ClassVar[str] = "DR"
    needs_q_hat: ClassVar[bool] = True

    def _terms(self, prep: Prepared) -> Terms:
        return _corrected(prep, prep.w)


@dataclass(frozen=True, slots=True, kw_only=True)
class SNDR(BaseEstimator):
    """Self-normalized DR, V = mean(Σ_a π q̂) + Σ w (r − q̂(x, a_i)) / Σ w."""

    name: ClassVar[str] = "SNDR"
    needs_q_hat: ClassVar[bool] = True

    def _terms(self, prep: Prepared) -> Terms:
        assert prep.dm is not None and prep.q_logged is not None
        w = np.broadcast_to(prep.w[:, None], prep.dm.shape)
        return Terms(a=prep.dm, b=w * (prep.rewards - prep.q_logged), c=np.array(w), weights=prep.weights)


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

    def __post_init__(self) -> None:
        check_positive("SwitchDR", "threshold", self.threshold)

    def _terms(self, prep: Prepared) -> Terms:
        return tuned_terms(prep, self.threshold, WEIGHT_GRID, _switched, n_above)


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

    def __post_init__(self) -> None:
        check_positive("DRos", "shrinkage", self.shrinkage, allow_zero=True)

    def _terms(self, prep: Prepared) -> Terms:
        return tuned_terms(prep, self.shrinkage, SHRINKAGE_GRID, _shrunk, _n_shrunk)
