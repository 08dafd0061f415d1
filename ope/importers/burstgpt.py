"""BurstGPT traces (``Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type``).

BurstGPT is a workload: arrival times and token counts of ChatGPT and GPT-4 requests served by
one Azure deployment per model, with failures marked by zero response tokens. It names no
provider, so each model's arm comes from the catalog (``[burstgpt] arms`` in the router config, else
the model's official arm, else its only arm): the logging policy was deterministic and the import
report says there is no overlap. ``Timestamp`` is seconds from the trace start (``[burstgpt] start``).
Latency comes from ``Elapsed time`` (trace v2+); without it, TTFT and latency are *assumed*
(``assumed_ttft_ms``, ``assumed_tokens_per_s``) and the report says so. Costs come from catalog
prices. Parsed column-wise with polars: these traces have millions of rows.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ope.data.catalog import Catalog
from ope.data.schema import Status
from ope.errors import ConfigError, SchemaError
from ope.importers.build import STAGE_SCHEMA, ImportContext, ImportResult, finalize
from ope.importers.names import NameMap

__all__ = ["REQUIRED", "import_burstgpt"]

REQUIRED = ("Timestamp", "Model", "Request tokens", "Response tokens")
_ELAPSED = "Elapsed time"
_MAX_SECONDS = 1e10


def _arms(catalog: Catalog, ctx: ImportContext) -> dict[str, str]:
    """Catalog model → the arm that served it in the trace."""
    names = NameMap(catalog, providers={}, models=ctx.config.model_aliases)
    frame = catalog.arms_frame
    out: dict[str, str] = {}
    for model in frame["model"].unique().to_list():
        arms = frame.filter(pl.col("model") == model)
        official = arms.filter(pl.col("official"))
        if official.height == 1:
            out[model] = official["arm"][0]
        elif arms.height == 1:
            out[model] = arms["arm"][0]
    for raw, arm in ctx.config.burstgpt.arms.items():
        if arm not in catalog.arms:
            raise ConfigError(f"{ctx.config.source}: [burstgpt] arms maps {raw!r} to {arm!r}, which is not in the catalog.")
        model = names.model(raw) or raw
        out[model] = arm
    return out


def _read(path: Path) -> pl.DataFrame:
    try:
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SchemaError(f"Cannot read {path} as CSV: {exc}") from exc
    frame = frame.rename({c: c.strip() for c in frame.columns})
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise SchemaError(f"{path}: not a BurstGPT trace: missing column(s) {missing} (found {frame.columns}).")
    return frame


def _number(column: str, kind: type[pl.DataType]) -> pl.Expr:
    return pl.col(column).str.strip_chars().cast(kind, strict=False)


def _reasons() -> pl.Expr:
    """The first broken rule of each row, or null when the row is fine."""
    checks = [
        (pl.col("Timestamp").is_null(), "Timestamp: missing"),
        (pl.col("_t").is_null() | ~pl.col("_t").is_between(0, _MAX_SECONDS), "Timestamp: expected seconds in [0, 1e10]"),
        (pl.col("Model").is_null(), "Model: missing"),
        (pl.col("Request tokens").is_null(), "Request tokens: missing"),
        (pl.col("_in").is_null() | (pl.col("_in") < 0), "Request tokens: expected an integer >= 0"),
        (pl.col("Response tokens").is_null(), "Response tokens: missing"),
        (pl.col("_out").is_null() | (pl.col("_out") < 0), "Response tokens: expected an integer >= 0"),
        (pl.col("_elapsed_bad"), f"{_ELAPSED}: expected seconds in [0, 1e10]"),
    ]
    expr = pl.lit(None, dtype=pl.String)
    for cond, reason in reversed(checks):
        expr = pl.when(cond).then(pl.lit(reason)).otherwise(expr)
    return expr.alias("_reason")


def _arm_of_model(good: pl.DataFrame, ctx: ImportContext) -> dict[str, str | None]:
    """The catalog arm that served each BurstGPT model name (None: no catalog model of that name)."""
    assert ctx.catalog is not None
    names = NameMap(ctx.catalog, providers={}, models=ctx.config.model_aliases)
    arms = _arms(ctx.catalog, ctx)
    model_of = {m: names.model(m) for m in good["Model"].unique().to_list()}
    ambiguous = sorted(f"{m!r} (catalog model {c!r})" for m, c in model_of.items() if c and c not in arms)
    if ambiguous:
        raise ConfigError(f"BurstGPT models {', '.join(ambiguous)} have several catalog arms and none is the only official "
                          "one: say which served the trace under [burstgpt] arms in the router config.")
    return {m: arms.get(c) if c else None for m, c in model_of.items()}


def import_burstgpt(path: str | Path, ctx: ImportContext) -> ImportResult:
    """Import a BurstGPT trace as a deterministic-router workload on the catalog's arms."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"File not found: {path}")
    if ctx.catalog is None:
        raise SchemaError("BurstGPT names no provider or price: `ope import burstgpt` needs --catalog.")
    frame = _read(path).with_row_index("_line", offset=2)
    settings = ctx.config.burstgpt
    has_elapsed = _ELAPSED in frame.columns
    elapsed = _number(_ELAPSED, pl.Float64) if has_elapsed else pl.lit(None, dtype=pl.Float64)
    frame = frame.with_columns(_t=_number("Timestamp", pl.Float64), _in=_number("Request tokens", pl.Int64),
                               _out=_number("Response tokens", pl.Int64), _elapsed=elapsed)
    frame = frame.with_columns(_elapsed_bad=pl.lit(has_elapsed) & ~pl.col("_elapsed").is_between(0, _MAX_SECONDS).fill_null(False))
    frame = frame.with_columns(_reasons())
    bad = frame.filter(pl.col("_reason").is_not_null())
    for row in bad.select("_line", "_reason", *[c for c in frame.columns if not c.startswith("_")]).iter_rows(named=True):
        record = {k: v for k, v in row.items() if not k.startswith("_")}
        ctx.ledger.bad(row["_reason"], f"line {row['_line']}", record)
    good = frame.filter(pl.col("_reason").is_null())
    arm_of = _arm_of_model(good, ctx)
    failed = pl.col("_out") == 0
    tps = settings.assumed_tokens_per_s
    latency = (pl.col("_elapsed") * 1000.0 if has_elapsed
               else settings.assumed_ttft_ms + pl.col("_out").cast(pl.Float64) * 1000.0 / tps)
    ttft = pl.lit(0.0) if has_elapsed else pl.lit(settings.assumed_ttft_ms)
    start_us = int(settings.start.timestamp() * 1_000_000)
    log_type = pl.col("Log Type") if "Log Type" in good.columns else pl.lit(None, dtype=pl.String)
    stage = good.select(
        pl.format("line {}", pl.col("_line")).alias("_where"),
        pl.format("burstgpt-{}", pl.col("_line")).alias("request_id"),
        (pl.col("_t") * 1_000_000).round().cast(pl.Int64).add(start_us).alias("ts_us"),
        pl.col("Model").alias("model_raw"),
        log_type.str.strip_chars().str.to_lowercase().str.replace(r"\s*log$", "").fill_null("unknown").alias("task"),
        pl.col("_in").alias("input_tokens"),
        pl.lit(None, dtype=pl.String).alias("provider_raw"), pl.lit(None, dtype=pl.String).alias("provider_alt"),
        pl.col("Model").replace_strict(arm_of, default=None, return_dtype=pl.String).fill_null("<no arm>").alias("arm_raw"),
        pl.when(failed).then(pl.lit(Status.SERVER_ERROR.value)).otherwise(pl.lit(Status.OK.value)).alias("status"),
        pl.col("_out").alias("output_tokens"),
        pl.when(failed).then(latency if has_elapsed else pl.lit(settings.assumed_ttft_ms)).otherwise(ttft).alias("ttft_ms"),
        pl.when(failed & ~pl.lit(has_elapsed)).then(pl.lit(settings.assumed_ttft_ms)).otherwise(latency).alias("latency_ms"),
        pl.lit(None, dtype=pl.Float64).alias("cost_usd"), pl.lit(None, dtype=pl.String).alias("tenant"),
        pl.lit(None, dtype=pl.Boolean).alias("streamed"),
        pl.lit([], dtype=pl.List(pl.String)).alias("failed_providers"),
    )
    stage = stage.cast({c: STAGE_SCHEMA[c] for c in stage.columns})  # type: ignore[arg-type]
    ctx.notes.append("BurstGPT names no provider: each model's arm was assigned from the catalog and the logging "
                     "policy was deterministic (one endpoint per model): no overlap, only model-based estimates.")
    ctx.notes.append("Failures are rows with zero response tokens; their kind is unknown and recorded as server_error.")
    if not has_elapsed:
        ctx.notes.append(f"ASSUMED timings: the trace has no '{_ELAPSED}' column, so ttft_ms = {settings.assumed_ttft_ms} "
                         f"and latency_ms = ttft + output tokens / {tps} tokens/s. Latency, TTFT, throughput and SLA "
                         "metrics carry no information from this log.")
    return finalize(stage, ctx, rows_read=frame.height)
