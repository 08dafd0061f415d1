"""Errors raised by estimators; subclasses of ValueError so plain callers can catch them."""

from __future__ import annotations

__all__ = ["EstimatorInputError", "EstimatorSupportError"]


class EstimatorInputError(ValueError):
    """Arrays handed to an estimator break its contract (shape, range, normalisation)."""


class EstimatorSupportError(EstimatorInputError):
    """A target policy puts probability on arms outside a row's eligible set."""
