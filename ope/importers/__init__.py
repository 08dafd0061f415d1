"""Importers: gateway logs in the formats users already have → the request-log schema (DESIGN §4).

>>> sorted(FORMATS)
['burstgpt', 'litellm', 'openrouter', 'otel']

Each importer reads one format, sets malformed records aside with counts and examples (fatal with
``strict=True``), maps provider names to catalog arms, recomputes propensities when the router
config describes a randomised router, and checks the result with the rules of ``ope validate``.
docs/importers.md maps every field of every format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ope.data.catalog import Catalog
from ope.data.overlap import NO_OVERLAP, OverlapFinding, detect_deterministic_router
from ope.errors import ConfigError, SchemaError
from ope.importers.build import ImportContext, ImportResult, write_import
from ope.importers.burstgpt import import_burstgpt
from ope.importers.common import ImportReport, MalformedRecordError
from ope.importers.litellm import import_litellm
from ope.importers.openrouter import import_openrouter
from ope.importers.otel import import_otel
from ope.importers.router_config import RouterConfig, load_router_config, reconstruct_propensities

__all__ = [
    "FORMATS",
    "NO_OVERLAP",
    "ImportReport",
    "ImportResult",
    "MalformedRecordError",
    "OverlapFinding",
    "RouterConfig",
    "detect_deterministic_router",
    "import_logs",
    "load_router_config",
    "reconstruct_propensities",
    "write_import",
]

Importer = Callable[..., ImportResult]

#: format name → importer
FORMATS: dict[str, Importer] = {
    "litellm": import_litellm,
    "openrouter": import_openrouter,
    "otel": import_otel,
    "burstgpt": import_burstgpt,
}


def import_logs(
    fmt: str,
    path: str | Path,
    *,
    catalog: Catalog | None = None,
    router_config: RouterConfig | str | Path | None = None,
    strict: bool = False,
    error_logs: str | Path | None = None,
) -> ImportResult:
    """Import one gateway log file of format ``fmt`` (see ``FORMATS``).

    Parameters
    ----------
    fmt
        ``litellm``, ``openrouter``, ``otel`` or ``burstgpt``.
    path
        The export to read.
    catalog
        Arms, prices and context limits; needed to map providers to arms, price OTel and BurstGPT
        requests, and reconstruct propensities. Without it, arms are ``provider/model`` as logged.
    router_config
        A `RouterConfig` or the path of a router-config file (aliases, the logging router).
    strict
        Raise `MalformedRecordError` instead of setting malformed records aside.
    error_logs
        LiteLLM only: a ``LiteLLM_ErrorLogs`` export whose rows become failed requests.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown import format {fmt!r} (known: {', '.join(FORMATS)}).")
    if error_logs is not None and fmt != "litellm":
        raise ConfigError(f"error_logs is a LiteLLM option; the {fmt} format does not take it.")
    for given in (path, error_logs):
        if given is not None and not Path(given).is_file():
            what = "a directory" if Path(given).is_dir() else "not found"
            raise SchemaError(f"Cannot import {given}: it is {what}; give the export file itself.")
    config = router_config if isinstance(router_config, RouterConfig) else load_router_config(router_config)
    ctx = ImportContext(fmt=fmt, source=str(path), catalog=catalog, config=config, strict=strict)
    if fmt == "litellm":
        return import_litellm(path, ctx, error_logs=error_logs)
    return FORMATS[fmt](path, ctx)
