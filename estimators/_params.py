"""Hyperparameter rules, declared once (scikit-learn style messages)."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_positive"]


def check_positive(owner: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is "auto" or a float in (0, inf] (or [0, inf] with ``allow_zero``)."""
    if value == "auto":
        return
    low = "[0" if allow_zero else "(0"
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not math.isnan(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)  # type: ignore[operator]
    if not ok:
        msg = f"The '{name}' parameter of {owner} must be a float in {low}, inf] or 'auto'. Got {value!r} instead."
        raise ValueError(msg)
