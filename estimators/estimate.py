"""Typed, frozen estimation results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from estimators.inference import IntervalFit

__all__ = ["Diagnostics", "Estimate"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostics:
    """How much to trust an estimate: overlap, weights and support.

    ess
        Kish effective sample size of importance × sample weights (n when target = logger).
    max_weight, mean_weight, mean_weight_se
        Largest importance weight π(a|x)/p, and the weighted mean weight with its standard error;
        the mean is 1 in expectation when propensities are right.
    mean_weight_flag
        True when the mean weight is more than 4 standard errors (and 5 %) away from 1.
    unsupported_share
        Share of target probability on arms the logger could not have played in that context.
    n_modified
        Rows whose weight a hyperparameter changed (clipped, switched off, shrunk by > 1 %).
    hyperparameter
        The clip / threshold / shrinkage used, or None; one per metric when chosen automatically.
    warnings
        Plain-language support and overlap problems, empty when there are none.
    """

    ess: float
    max_weight: float
    mean_weight: float
    mean_weight_se: float
    mean_weight_flag: bool
    unsupported_share: float
    n_modified: int = 0
    hyperparameter: float | tuple[float, ...] | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form for JSON and MLflow."""
        return {
            "ess": self.ess,
            "max_weight": self.max_weight,
            "mean_weight": self.mean_weight,
            "mean_weight_se": self.mean_weight_se,
            "mean_weight_flag": self.mean_weight_flag,
            "unsupported_share": self.unsupported_share,
            "n_modified": self.n_modified,
            "hyperparameter": list(self.hyperparameter) if isinstance(self.hyperparameter, tuple) else self.hyperparameter,
            "warnings": list(self.warnings),
        }


def _plain(x: FloatArray | float) -> float | list[float]:
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr.tolist()


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """A point estimate with its interval and diagnostics.

    ``value``, ``stderr``, ``ci_low``, ``ci_high`` and ``n`` are floats for one metric, (M,) arrays
    for M metrics. ``kind`` is "value", "difference" (target − baseline) or "relative" (in %).
    """

    estimator: str
    kind: str
    value: FloatArray | float
    stderr: FloatArray | float
    ci_low: FloatArray | float
    ci_high: FloatArray | float
    alpha: float
    n: FloatArray | float
    ess: float
    inference: str
    diagnostics: Diagnostics
    fit: IntervalFit = field(repr=False, compare=False)
    scalar: bool = field(default=False, repr=False)

    def ci(self, alpha: float = 0.05) -> tuple[FloatArray | float, FloatArray | float]:
        """The (1 − alpha) confidence interval, at any level."""
        low, high = self.fit.ci(alpha)
        if self.scalar:
            return float(low[0]), float(high[0])
        return low, high

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form for JSON and MLflow."""
        return {
            "estimator": self.estimator,
            "kind": self.kind,
            "value": _plain(self.value),
            "stderr": _plain(self.stderr),
            "ci_low": _plain(self.ci_low),
            "ci_high": _plain(self.ci_high),
            "alpha": self.alpha,
            "n": _plain(self.n),
            "ess": self.ess,
            "inference": self.inference,
            "diagnostics": self.diagnostics.to_dict(),
        }
