"""llm-ope: offline counterfactual evaluation of LLM request-routing policies.

``ope.evaluate(...)`` runs an evaluation from Python (`ope.api`); the ``ope`` command is a thin layer
over the same run. Every error llm-ope raises on purpose derives from `OPEError`.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from ope.errors import (
    CatalogError,
    ConfigError,
    EstimatorInputError,
    EstimatorSupportError,
    OPEError,
    PolicyError,
    SchemaError,
    SupportError,
)

if TYPE_CHECKING:
    from ope.api import evaluate

__all__ = ["CatalogError", "ConfigError", "EstimatorInputError", "EstimatorSupportError", "OPEError", "PolicyError", "SchemaError",
           "SupportError", "__version__", "evaluate"]

try:
    __version__ = metadata.version("llm-ope")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    """``ope.evaluate`` is imported on first use: the CLI and light imports of ``ope`` do not pay for the whole stack."""
    if name == "evaluate":
        from ope.api import evaluate

        return evaluate
    raise AttributeError(f"module 'ope' has no attribute {name!r}")
