"""Inverse propensity scoring: IPS (optionally clipped) and self-normalized IPS."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from estimators._params import check_positive
from estimators.base import BaseEstimator, Prepared
from estimators.statistic import Terms
from estimators.tuning import WEIGHT_GRID

__all__ = ["IPS", "SNIPS"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IPS(BaseEstimator):
    """Inverse propensity scoring, V = mean(min(w, clip) · r) with w = π(a|x) / p.

    Notes
    -----
    Unbiased with correct propensities and ``clip = inf`` (Horvitz & Thompson, 1952); clipping
    trades a downward bias for variance (Ionides, 2008). ``clip="auto"`` picks it per metric from
    a fixed grid by estimated MSE (`estimators.tuning`).

    Examples
    --------
    >>> import numpy as np
    >>> from estimators import BanditFeedback, IPS
    >>> fb = BanditFeedback(actions=np.array([0]), rewards=np.array([1.0]), propensities=np.array([0.3]), n_arms=2)
    >>> round(IPS().estimate(fb, target=np.array([[0.6, 0.4]])).value, 12)
    2.0
    """

    clip: float | str = math.inf
    name: ClassVar[str] = "IPS"
    grid: ClassVar[tuple[float, ...]] = WEIGHT_GRID

    def __post_init__(self) -> None:
        check_positive("IPS", "clip", self.clip)

    def _setting(self) -> float | str:
        return self.clip

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        w = np.minimum(prep.w, math.inf if level is None else level)[:, None]
        return Terms(b=w * prep.rewards)


@dataclass(frozen=True, slots=True, kw_only=True)
class SNIPS(BaseEstimator):
    """Self-normalized IPS, V = Σ w r / Σ w: bounded by the rewards, slightly biased.

    Notes
    -----
    Swaminathan & Joachims (2015). Its interval uses the delta-method variance of the ratio, and
    its bootstrap recomputes the normalizer Σ w in every replicate.
    """

    name: ClassVar[str] = "SNIPS"

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        w = np.broadcast_to(prep.w[:, None], prep.rewards.shape)
        return Terms(b=w * prep.rewards, c=np.array(w))
