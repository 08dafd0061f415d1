"""The direct method: trust the reward model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from estimators.base import BaseEstimator, Prepared
from estimators.statistic import Terms

__all__ = ["DM"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DM(BaseEstimator):
    """Direct method, V = mean(Σ_a π(a|x) q̂(x, a)).

    Notes
    -----
    Low variance, but biased wherever q̂ is wrong (Dudík, Langford & Li, 2011). Its interval only
    reflects sampling noise in the contexts, not the model's error.
    """

    name: ClassVar[str] = "DM"
    needs_q_hat: ClassVar[bool] = True

    def _terms_at(self, prep: Prepared, level: float | None) -> Terms:
        assert prep.dm is not None
        return Terms(a=prep.dm)
