"""Errors raised by estimators, and the root of every error llm-ope raises on purpose (re-exported as `ope.OPEError`).

All are ValueErrors, so plain callers can catch them too.
"""

from __future__ import annotations

__all__ = ["EstimatorInputError", "EstimatorSupportError", "OPEError"]


class OPEError(ValueError):
    """Base class of every error llm-ope raises on purpose: estimators, policies, and the ``ope`` package."""


class EstimatorInputError(OPEError):
    """Arrays handed to an estimator break its contract (shape, range, normalisation)."""


class EstimatorSupportError(EstimatorInputError):
    """A target policy puts probability on arms outside a row's eligible set."""
