"""From staged records to a validated request log (DESIGN §4) and its import report.

Every importer parses its format into the *stage* frame below (raw provider and model names,
typed outcomes); this module does the rest once for all: names to catalog arms, costs from the
catalog where the format has none, propensities from the router config, the full schema check of
``ope.data.validate`` (rows that fail it are malformed records, never a broken output file), the
deterministic-router check and the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ope.data.catalog import Catalog, catalog_from_frame
from ope.data.overlap import detect_deterministic_router
from ope.data.schema import Status
from ope.data.validate import validate_logs, write_table
from ope.errors import ConfigError
from ope.importers.common import ImportReport, Ledger, MalformedRecordError
from ope.importers.names import NameMap
from ope.importers.router_config import RouterConfig, reconstruct_propensities
from ope.text import count as plural

__all__ = ["STAGE_SCHEMA", "ImportContext", "ImportResult", "finalize", "stage_frame", "write_import"]

#: what importers produce; null ttft_ms = not measured, null cost_usd = derive from the catalog
STAGE_SCHEMA: dict[str, pl.DataType] = {
    "_where": pl.String(), "request_id": pl.String(), "ts_us": pl.Int64(), "model_raw": pl.String(),
    "task": pl.String(), "input_tokens": pl.Int64(), "provider_raw": pl.String(), "provider_alt": pl.String(),
    "arm_raw": pl.String(), "status": pl.String(), "output_tokens": pl.Int64(), "ttft_ms": pl.Float64(),
    "latency_ms": pl.Float64(), "cost_usd": pl.Float64(), "tenant": pl.String(), "streamed": pl.Boolean(),
    "failed_providers": pl.List(pl.String()), "needs_tools": pl.Boolean(), "needs_json": pl.Boolean(),
}
_EXTRAS = ("tenant", "streamed", "needs_tools", "needs_json")
_CHARGED = (Status.OK.value, Status.TRUNCATED.value)


@dataclass(slots=True, kw_only=True)
class ImportContext:
    """One import: format, input, catalog, router config, strictness and the running ledger."""

    fmt: str
    source: str
    catalog: Catalog | None
    config: RouterConfig
    strict: bool = False
    ledger: Ledger = field(default_factory=Ledger)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The request log, the import report and the set-aside records (where, reason, record)."""

    logs: pl.DataFrame
    report: ImportReport
    errors: pl.DataFrame


def stage_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Staged records (dicts with any subset of the stage columns) as a typed frame."""
    frame = pl.DataFrame(rows, schema=STAGE_SCHEMA, strict=False) if rows else pl.DataFrame(schema=STAGE_SCHEMA)
    return frame.with_columns(pl.col("failed_providers").fill_null(pl.lit([], dtype=pl.List(pl.String))))


def _set_aside(stage: pl.DataFrame, bad: pl.Series, reasons: pl.Series, ctx: ImportContext) -> pl.DataFrame:
    """Move rows where ``bad`` to the ledger with their reason; return the rest."""
    mask = bad.fill_null(False)
    if mask.any():
        for row, reason in zip(stage.filter(mask).iter_rows(named=True), reasons.filter(mask).to_list(), strict=True):
            ctx.ledger.bad(reason, f"{row['_where']} (request_id {row['request_id']})", json.dumps(row, default=str))
    return stage.filter(~mask)


def _map_arms(stage: pl.DataFrame, ctx: ImportContext) -> pl.DataFrame:
    """Resolve model and arm names; records naming unknown ones are malformed."""
    names = NameMap(ctx.catalog, providers=ctx.config.provider_aliases, models=ctx.config.model_aliases)
    models = {m: names.model(m) for m in stage["model_raw"].unique().to_list()}
    stage = stage.with_columns(pl.col("model_raw").replace_strict(models, default=None, return_dtype=pl.String).alias("model"))
    bad = stage["model"].is_null()
    reasons = pl.format("model: unknown model '{}' (not in the catalog; add an alias under [aliases] models)",
                        stage["model_raw"].fill_null("")).alias("r")
    stage = _set_aside(stage, bad, stage.select(reasons).to_series(), ctx)
    combos = stage.select("provider_raw", "provider_alt", "arm_raw", "model").unique()
    lookup = []
    for raw, alt, arm_raw, model in combos.iter_rows():
        if arm_raw is not None:
            arm = arm_raw if ctx.catalog is None or arm_raw in ctx.catalog.arms else None
        else:
            arm = next((a for a in (names.arm(names.provider(p), model) for p in (alt, raw)) if a), None)
        lookup.append({"provider_raw": raw, "provider_alt": alt, "arm_raw": arm_raw, "model": model, "arm": arm})
    table = pl.DataFrame(lookup, schema={**{c: pl.String for c in ("provider_raw", "provider_alt", "arm_raw", "model")},
                                         "arm": pl.String})
    stage = stage.join(table, on=["provider_raw", "provider_alt", "arm_raw", "model"], how="left",
                       maintain_order="left", nulls_equal=True)
    named = pl.coalesce(stage["arm_raw"], stage["provider_raw"]).fill_null("<missing>")
    named = pl.select(pl.when(stage["provider_alt"].is_not_null())
                      .then(pl.format("{}' or '{}", stage["provider_alt"], named)).otherwise(named)).to_series()
    reasons = pl.format("provider: unknown provider '{}' for model '{}' (no catalog arm; add an alias under "
                        "[aliases] providers)", named, stage["model"]).alias("r")
    return _set_aside(stage, stage["arm"].is_null(), stage.select(reasons).to_series(), ctx)


def _costs(stage: pl.DataFrame, ctx: ImportContext) -> pl.DataFrame:
    """Fill missing costs from catalog prices in force (charged statuses only)."""
    missing = stage["cost_usd"].is_null()
    if not missing.any():
        return stage
    if ctx.catalog is None:
        reasons = pl.Series(["cost_usd: missing, and no --catalog to derive it from prices"] * stage.height)
        return _set_aside(stage, missing, reasons, ctx)
    ts = pl.from_epoch(stage["ts_us"], time_unit="us").dt.replace_time_zone("UTC")
    p_in, p_out = ctx.catalog.prices_at(ts)
    rows, idx = np.arange(stage.height), ctx.catalog.arm_index(stage["arm"])
    priced = (stage["input_tokens"].to_numpy() * p_in[rows, idx] + stage["output_tokens"].to_numpy() * p_out[rows, idx]) / 1e6
    charged = stage["status"].is_in(_CHARGED).to_numpy()
    derived = pl.Series(np.where(charged, priced, 0.0))
    ctx.notes.append(f"cost_usd derived from catalog prices for {int(missing.sum())} rows "
                     "(input and output tokens × price in force; failed requests cost 0).")
    return stage.with_columns(pl.when(missing).then(derived).otherwise(pl.col("cost_usd")).alias("cost_usd"))


def _log_frame(stage: pl.DataFrame, ctx: ImportContext) -> pl.DataFrame:
    unknown_ttft = int(stage["ttft_ms"].is_null().sum())
    if unknown_ttft:
        ctx.notes.append(f"{unknown_ttft} rows have no time to first token (not streamed or not recorded): ttft_ms = 0, "
                         "so their throughput is end-to-end (output tokens / latency).")
    extras = [c for c in _EXTRAS if stage[c].is_not_null().any()]
    if ctx.fmt == "openrouter" or stage["failed_providers"].list.len().sum():
        extras.append("failed_providers")
    return stage.select(
        "request_id",
        pl.from_epoch("ts_us", time_unit="us").dt.replace_time_zone("UTC").alias("ts"),
        "model", "task", "input_tokens", "arm", pl.lit(None, dtype=pl.Float64).alias("propensity"), "status",
        "output_tokens", pl.col("ttft_ms").fill_null(0.0), "latency_ms", "cost_usd",
        pl.lit(None, dtype=pl.Float64).alias("satisfaction"), pl.lit(1.0).alias("sample_weight"), *extras, "_where",
    )


def _permissive_catalog(logs: pl.DataFrame) -> Catalog:
    """Without a catalog: every logged arm, unlimited context, so validation checks everything else."""
    arms = logs.select("arm", "model").unique().with_columns(
        pl.col("arm").str.split("/").list.first().alias("provider"), pl.lit(False).alias("official"),
        pl.lit(0.0).alias("price_in_per_mtok"), pl.lit(0.0).alias("price_out_per_mtok"),
        pl.lit(2**62).alias("context_tokens"))
    return catalog_from_frame(arms, source="(arms seen in the log)")


def _validate(logs: pl.DataFrame, ctx: ImportContext) -> pl.DataFrame:
    """Run the schema rules of `ope validate`; rows breaking them are malformed records."""
    if logs.height == 0:
        return logs
    catalog = ctx.catalog if ctx.catalog is not None else _permissive_catalog(logs)
    result = validate_logs(logs, catalog, source=ctx.source)
    for row in result.bad_rows.iter_rows(named=True):
        reason = row["_problems"].split("; ")[0]
        ctx.ledger.bad(reason, f"{row['_where']} (request_id {row['request_id']})", json.dumps(row, default=str))
    return result.logs


def _propensities(logs: pl.DataFrame, ctx: ImportContext) -> tuple[pl.DataFrame, str]:
    cfg = ctx.config
    if cfg.strategy == "deterministic":
        ctx.notes.append(f"The router config ({cfg.source}) describes a deterministic router (sort, order, latency- or "
                         "cost-based): propensities stay null and there is no overlap; only model-based estimates "
                         "(DM) are possible.")
    if not cfg.randomised or logs.height == 0:
        if ctx.catalog is None or logs.height == 0:
            return logs, "none"
        single = ctx.catalog.eligible(logs).sum(axis=1) == 1
        if not single.any():
            return logs, "none"
        ctx.notes.append(f"{plural(int(single.sum()), 'row')} with a single eligible arm: their propensity is exactly 1.")
        return logs.with_columns(pl.when(pl.Series(single)).then(1.0).otherwise(None).alias("propensity")), \
            "1 where a single arm was eligible" if not single.all() else "1 (a single eligible arm everywhere)"
    if ctx.catalog is None:
        raise ConfigError(f"{cfg.source}: reconstructing {cfg.strategy} propensities needs prices and eligibility: pass --catalog.")
    fallback = logs["failed_providers"].list.len().to_numpy() > 0 if "failed_providers" in logs.columns else None
    p, notes = reconstruct_propensities(logs, ctx.catalog, cfg, unknown_rows=fallback)
    ctx.notes.extend(notes)
    missing = int(np.isnan(p).sum())
    if missing:
        ctx.notes.append(f"{missing} of {logs.height} rows have no reconstructed propensity: `ope run` will estimate "
                         "propensities for the whole log (a model of the logging policy) and say so in the report.")
    column = pl.Series("propensity", p, dtype=pl.Float64, nan_to_null=True)
    return logs.with_columns(column), f"reconstructed ({cfg.strategy})"


def finalize(stage: pl.DataFrame, ctx: ImportContext, *, rows_read: int) -> ImportResult:
    """Map, derive, validate and account for the staged records of one import."""
    stage = stage.with_columns(pl.lit(None, dtype=d).alias(c) for c, d in STAGE_SCHEMA.items() if c not in stage.columns)
    fallbacks = stage["failed_providers"].list.len()
    stage = _costs(_map_arms(stage, ctx), ctx)
    logs = _validate(_log_frame(stage, ctx), ctx).drop("_where")
    logs, propensity = _propensities(logs, ctx)
    overlap = None
    if ctx.catalog is not None and logs.height:
        overlap = detect_deterministic_router(logs, ctx.catalog.eligible(logs)).to_dict()
    ledger = ctx.ledger
    if rows_read != logs.height + ledger.n_malformed + ledger.n_skipped:
        msg = f"internal accounting error: {rows_read} read, {logs.height} written, {ledger.n_malformed} malformed, {ledger.n_skipped} skipped"
        raise AssertionError(msg)
    if ctx.strict and ledger.n_malformed:
        raise MalformedRecordError(ledger.message(ctx.source))
    report = ImportReport(
        format=ctx.fmt, source=ctx.source, rows_read=rows_read, rows_written=logs.height,
        malformed=dict(ledger.malformed), skipped=dict(ledger.skipped),
        examples={k: tuple(v) for k, v in ledger.examples.items()},
        fallback_attempts=int(fallbacks.sum() or 0), requests_with_fallbacks=int((fallbacks > 0).sum()),
        propensity=propensity, rows_with_propensity=int(logs["propensity"].is_not_null().sum()) if logs.height else 0,
        notes=tuple(ctx.notes), overlap=overlap,
    )
    errors = pl.DataFrame(ledger.rows, schema={"where": pl.String, "reason": pl.String, "record": pl.String})
    return ImportResult(logs=logs, report=report, errors=errors)


def write_import(result: ImportResult, out: str | Path, *, errors: str | Path | None = None) -> Path:
    """Write the log (format from its extension), the report beside it (``.import.json``) and the errors file."""
    out = Path(out)
    if errors is not None:
        write_table(result.errors, Path(errors))
    if result.logs.height == 0:
        report = result.report
        first = next(iter(report.malformed), None)
        why = f"; the first reason: {first}" if first else ""
        raise MalformedRecordError(f"Nothing to write to {out}: none of the {report.rows_read} records of {report.source} could "
                                   f"be imported as {report.format} ({report.n_malformed} malformed, {report.n_skipped} "
                                   f"skipped{why}).")
    write_table(result.logs, out)
    report_path = out.with_name(out.stem + ".import.json")
    report_path.write_text(json.dumps(result.report.to_dict(), indent=2) + "\n")
    return report_path
