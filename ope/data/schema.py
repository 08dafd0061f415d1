"""The request-log schema (DESIGN §4): column names, types, statuses and derived metrics.

Described once here; validation, the dataset, the simulator and the importers all read it.
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl

__all__ = [
    "Status",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "METRICS",
    "LOWER_IS_BETTER",
    "RATE_METRICS",
    "CATALOG_COLUMNS",
    "CATALOG_OPTIONAL_COLUMNS",
    "CAPABILITY_PREFIX",
    "NEED_PREFIX",
]


class Status(StrEnum):
    """Outcome of one request as the gateway saw it."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONTEXT_OVERFLOW = "context_overflow"
    BAD_REQUEST = "bad_request"
    TRUNCATED = "truncated"
    CONTENT_FILTER = "content_filter"


#: column -> polars dtype class family it must have after reading ("str", "int", "float", "datetime")
REQUIRED_COLUMNS: dict[str, str] = {
    "request_id": "str",
    "ts": "datetime",
    "model": "str",
    "task": "str",
    "input_tokens": "int",
    "arm": "str",
    "propensity": "float",
    "status": "str",
    "output_tokens": "int",
    "ttft_ms": "float",
    "latency_ms": "float",
    "cost_usd": "float",
    "satisfaction": "float",
}

#: columns that may be absent; when present they must have this kind
OPTIONAL_COLUMNS: dict[str, str] = {
    "sample_weight": "float",
    "eligible_arms": "list[str]",
}

#: derived outcome metrics, in the order of every (n, M) / (n, K, M) array
METRICS: tuple[str, ...] = (
    "cost_usd",
    "success",
    "satisfaction",
    "ttft_ms",
    "latency_ms",
    "throughput_tps",
    "sla_hit",
)

#: metrics where a decrease is an improvement (the rest: higher is better)
LOWER_IS_BETTER: frozenset[str] = frozenset({"cost_usd", "ttft_ms", "latency_ms"})
#: metrics that are rates in [0, 1] (changes also read in percentage points)
RATE_METRICS: frozenset[str] = frozenset({"success", "satisfaction", "sla_hit"})

CATALOG_COLUMNS: dict[str, str] = {
    "arm": "str",
    "provider": "str",
    "model": "str",
    "official": "bool",
    "price_in_per_mtok": "float",
    "price_out_per_mtok": "float",
    "context_tokens": "int",
}
CATALOG_OPTIONAL_COLUMNS: dict[str, str] = {"valid_from": "datetime"}

#: catalog capability columns are ``supports_<x>`` (bool); a log column ``needs_<x>`` (bool)
#: restricts a request's eligible arms to those that support ``x``.
CAPABILITY_PREFIX = "supports_"
NEED_PREFIX = "needs_"

DTYPE_KINDS: dict[str, tuple[type[pl.DataType], ...]] = {
    "str": (pl.String, pl.Categorical, pl.Enum),
    "int": (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64),
    "float": (
        pl.Float32,
        pl.Float64,
        pl.Int8,
        pl.Int16,
        pl.Int32,
        pl.Int64,
        pl.UInt8,
        pl.UInt16,
        pl.UInt32,
        pl.UInt64,
    ),
    "datetime": (pl.Datetime,),
    "bool": (pl.Boolean,),
    "list[str]": (pl.List,),
}
