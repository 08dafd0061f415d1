"""Per-row terms of an estimator and the statistics built from their means.

Every estimator in this package reduces to per-row terms (a, b, c) with

    value = mean_W(a) + mean_W(b) / mean_W(c),

weighted by W = sample weight × "metric observed". Linear estimators (IPS, DM, DR, Switch-DR, DRos)
use b = 0 or c = 1; self-normalized ones (SNIPS, SNDR) put the importance weight in c. A value,
a paired difference of two policies on the same rows, or their relative change is then a smooth
function of weighted column means, so one delta-method formula and one bootstrap serve them all.
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
    """Per-row terms a, b, c (each shape (n, M)) of one estimator on one policy.

    None marks a constant term: a = 0, b = 0, c = 1. Constants are not materialised or reduced.
    """

    a: FloatArray | None = None
    b: FloatArray | None = None
    c: FloatArray | None = None

    def constants(self) -> list[float]:
        """Per term: NaN when it varies by row, else its constant value."""
        return [np.nan if t is not None else v for t, v in ((self.a, 0.0), (self.b, 0.0), (self.c, 1.0))]

    def varying(self) -> list[FloatArray]:
        """The varying terms, each transposed to (M, n)."""
        return [t.T for t in (self.a, self.b, self.c) if t is not None]


def _value(means: FloatArray) -> FloatArray:
    """a + b / c on (..., 3, M) means."""
    return means[..., 0, :] + means[..., 1, :] / means[..., 2, :]


def _gradient(means: FloatArray) -> FloatArray:
    """d value / d (mean a, mean b, mean c), shape (3, M)."""
    b, c = means[1], means[2]
    return np.stack([np.ones_like(c), 1.0 / c, -b / c**2])


@dataclass(frozen=True, slots=True)
class Statistic:
    """A value (3 columns), a paired difference target − baseline, or a relative change in %
    100 · (target / baseline − 1) (6 columns: the target's terms, then the baseline's)."""

    kind: Kind = "value"

    @property
    def width(self) -> int:
        """Number of columns J."""
        return 3 if self.kind == "value" else 6

    def combine(self, means: FloatArray) -> FloatArray:
        """The statistic from weighted column means of shape (..., J, M)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = _value(means[..., :3, :])
            if self.kind == "value":
                return t
            b = _value(means[..., 3:, :])
            return t - b if self.kind == "difference" else 100.0 * (t / b - 1.0)

    def gradient(self, means: FloatArray) -> FloatArray:
        """d statistic / d column means, shape (J, M)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            g_t = _gradient(means[:3])
            if self.kind == "value":
                return g_t
            g_b = _gradient(means[3:])
            if self.kind == "difference":
                return np.concatenate([g_t, -g_b])
            t, b = _value(means[:3]), _value(means[3:])
            return 100.0 * np.concatenate([g_t / b, -t * g_b / b**2])
