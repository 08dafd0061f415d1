"""Per-row terms of an estimator and the statistics built from them.

Every estimator in this package reduces to per-row terms (a, b, c) with

    value = mean_W(a) + mean_W(b) / mean_W(c),

weighted by W = sample weight × "metric observed". Linear estimators (IPS, DM, DR, Switch-DR, DRos)
use b = 0 or c = 1; self-normalized ones (SNIPS, SNDR) put the importance weight in c. A value,
a paired difference of two policies on the same rows, or their relative change is then a smooth
function of weighted column means, so one delta-method formula and one bootstrap serve them all,
and every quantity is a sum over rows (mergeable across batches and workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Terms", "Statistic", "Kind"]

FloatArray = npt.NDArray[np.float64]
Kind = Literal["value", "difference", "relative"]


@dataclass(frozen=True, slots=True)
class Terms:
    """Per-row terms (each shape (n, M)) and row weights W (n, M) of one estimator on one policy.

    ``hyperparameter`` is the clip / threshold / shrinkage used (one per metric when tuned) and
    ``n_modified`` the rows whose weight it changed.
    """

    a: FloatArray
    b: FloatArray
    c: FloatArray
    weights: FloatArray
    hyperparameter: float | tuple[float, ...] | None = None
    n_modified: int = 0

    def stacked(self) -> FloatArray:
        """The terms as one (n, 3, M) array."""
        return np.stack([self.a, self.b, self.c], axis=1)


def _value(means: FloatArray) -> FloatArray:
    """a + b / c on (..., 3, M) means."""
    return means[..., 0, :] + means[..., 1, :] / means[..., 2, :]


def _gradient(means: FloatArray) -> FloatArray:
    """d value / d (mean a, mean b, mean c), shape (3, M)."""
    b, c = means[1], means[2]
    return np.stack([np.ones_like(c), 1.0 / c, -b / c**2])


@dataclass(frozen=True, slots=True)
class Statistic:
    """A value, a paired difference (target − baseline) or a relative change in % (target / baseline − 1)."""

    target: Terms
    baseline: Terms | None = None
    kind: Kind = "value"

    def __post_init__(self) -> None:
        if (self.kind == "value") != (self.baseline is None):
            raise ValueError("A baseline is needed exactly for 'difference' and 'relative' statistics.")

    @property
    def weights(self) -> FloatArray:
        """Row weights W, shape (n, M)."""
        return self.target.weights

    def columns(self) -> FloatArray:
        """All per-row terms the statistic depends on, shape (n, J, M) with J = 3 or 6."""
        parts = [self.target.stacked()]
        if self.baseline is not None:
            parts.append(self.baseline.stacked())
        return np.concatenate(parts, axis=1)

    def combine(self, means: FloatArray) -> FloatArray:
        """The statistic from weighted column means of shape (..., J, M)."""
        t = _value(means[..., :3, :])
        if self.kind == "value":
            return t
        b = _value(means[..., 3:, :])
        if self.kind == "difference":
            return t - b
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * (t / b - 1.0)

    def gradient(self, means: FloatArray) -> FloatArray:
        """d statistic / d column means, shape (J, M)."""
        g_t = _gradient(means[:3])
        if self.kind == "value":
            return g_t
        g_b = _gradient(means[3:])
        if self.kind == "difference":
            return np.concatenate([g_t, -g_b])
        t, b = _value(means[:3]), _value(means[3:])
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * np.concatenate([g_t / b, -t * g_b / b**2])

    def means(self) -> FloatArray:
        """Weighted column means, shape (J, M)."""
        w = self.weights
        total = w.sum(axis=0)
        return np.einsum("nm,njm->jm", w, self.columns()) / total

    def point(self) -> FloatArray:
        """Point estimate, shape (M,)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.combine(self.means())

    def influence(self) -> FloatArray:
        """Per-row influence ψ (n, M), so that estimate − truth ≈ Σ W ψ / Σ W (delta method)."""
        cols = self.columns()
        means = self.means()
        with np.errstate(divide="ignore", invalid="ignore"):
            grad = self.gradient(means)
        return np.einsum("jm,njm->nm", grad, cols - means[None])
