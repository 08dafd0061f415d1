"""Every exception llm-ope raises on purpose, in one hierarchy under `OPEError` (a ValueError).

`OPEError` is defined with the estimators (the package every other imports) and re-exported here
with the policies' and estimators' own errors, so ``except ope.OPEError`` catches them all.
"""

from __future__ import annotations

from estimators._errors import EstimatorInputError, EstimatorSupportError, OPEError
from policies.base import PolicyError

__all__ = ["CatalogError", "ConfigError", "EstimatorInputError", "EstimatorSupportError", "OPEError", "PolicyError", "SchemaError",
           "SupportError"]


class SchemaError(OPEError):
    """Logs do not follow the request-log schema (DESIGN §4)."""


class CatalogError(OPEError):
    """The endpoint catalog is malformed or does not cover the logs."""


class ConfigError(OPEError):
    """An experiment config is malformed: unknown key, wrong type, bad value."""


class SupportError(OPEError):
    """A target policy puts mass where the logging policy could not have acted."""
