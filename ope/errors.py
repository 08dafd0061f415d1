"""The one place llm-ope's exceptions live, so callers can catch them precisely."""

from __future__ import annotations

__all__ = ["OPEError", "SchemaError", "ConfigError", "SupportError", "CatalogError"]


class OPEError(ValueError):
    """Base class of every error llm-ope raises on purpose."""


class SchemaError(OPEError):
    """Logs do not follow the request-log schema (DESIGN §4)."""


class CatalogError(OPEError):
    """The endpoint catalog is malformed or does not cover the logs."""


class ConfigError(OPEError):
    """An experiment config is malformed: unknown key, wrong type, bad value."""


class SupportError(OPEError):
    """A target policy puts mass where the logging policy could not have acted."""
