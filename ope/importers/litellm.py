"""LiteLLM proxy spend logs (``LiteLLM_SpendLogs``, CSV or JSON export), plus ``LiteLLM_ErrorLogs``.

One spend-log row is one request the proxy routed: ``model_group`` is the public model the client
asked for, ``custom_llm_provider`` (or the prefix of ``model``) the provider of the deployment that
served it. Timings come from ``startTime``, ``completionStartTime`` and ``endTime``; ``status`` is
``success`` or ``failure`` (older exports have no status column: every row is a success), and a
failure's kind comes from ``metadata.error_information`` (``error_code``, ``error_class``). Rows of
the error-log table become failed requests unless the spend log already holds their request_id.
docs/importers.md maps every field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from ope.data.schema import Status
from ope.errors import SchemaError
from ope.importers.build import ImportContext, ImportResult, finalize, stage_frame
from ope.importers.common import Bad, get_float, get_int, get_str, get_time_us, json_records, status_from_error

__all__ = ["import_litellm"]

_CHAT_CALLS = {"completion", "acompletion", "text_completion", "atext_completion", "responses", "aresponses",
               "anthropic_messages"}


def _records(path: Path, ctx: ImportContext) -> Iterator[tuple[str, Any]]:
    """Rows of a CSV export (line numbers) or records of a JSON / NDJSON export."""
    if path.suffix.lower() != ".csv":
        yield from json_records(path, ctx.ledger)
        return
    try:
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SchemaError(f"Cannot read {path} as CSV: {exc}") from exc
    for i, row in enumerate(frame.iter_rows(named=True)):
        yield f"line {i + 2}", row


def _json_field(rec: Mapping[str, Any], key: str) -> Any:
    """A JSON column: already an object (JSON export) or JSON text (CSV export)."""
    value = rec.get(key)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise Bad(f"{key}: not valid JSON") from None
    return value


def _task(rec: Mapping[str, Any], metadata: Any) -> str:
    """A ``task:<name>`` request tag, else ``chat`` for chat calls, else the call type."""
    tags = _json_field(rec, "request_tags")
    if isinstance(metadata, dict) and not tags:
        tags = metadata.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.lower().startswith(("task:", "task=")):
            return tag[5:].strip() or "unknown"
    call = (get_str(rec, "call_type", required=False) or "").lower()
    return "chat" if call in _CHAT_CALLS or not call else call


def _needs(rec: Mapping[str, Any]) -> dict[str, bool | None]:
    """What the request body (``proxy_server_request``, when stored) needs: tools, JSON output."""
    body = _json_field(rec, "proxy_server_request")
    if not isinstance(body, dict) or not body:
        return {"needs_tools": None, "needs_json": None}
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    return {"needs_tools": bool(body.get("tools") or body.get("functions")), "needs_json": kind in ("json_object", "json_schema")}


def _failure(metadata: Any) -> Status:
    info = metadata.get("error_information") if isinstance(metadata, dict) else None
    if not isinstance(info, dict):
        return Status.SERVER_ERROR
    by_name = status_from_error(" ".join(str(info.get(k) or "") for k in ("error_class", "error_message")))
    code = str(info.get("error_code") or "").strip()
    return status_from_error(code) if code.isdecimal() and by_name == Status.SERVER_ERROR else by_name


def _provider(rec: Mapping[str, Any], model_key: str) -> str:
    provider = get_str(rec, "custom_llm_provider", required=False)
    if provider:
        return provider
    model = get_str(rec, model_key, required=False) or ""
    if "/" in model:
        return model.split("/")[0]
    raise Bad("custom_llm_provider: missing (and the served model name has no provider/ prefix)")


def _spend_row(rec: Any) -> dict[str, object]:
    """One spend-log record as a stage row; raises `Bad` naming the field."""
    if not isinstance(rec, dict):
        raise Bad(f"record: expected an object, got {type(rec).__name__}")
    start, end = get_time_us(rec, "startTime"), get_time_us(rec, "endTime")
    first = get_time_us(rec, "completionStartTime", required=False)
    assert start is not None and end is not None
    if end < start:
        raise Bad("endTime: before startTime")
    metadata = _json_field(rec, "metadata")
    raw_status = (get_str(rec, "status", required=False) or "success").lower()
    if raw_status not in ("success", "failure"):
        raise Bad(f"status: expected success or failure, got {raw_status!r:.40}")
    status = Status.OK if raw_status == "success" else _failure(metadata)
    latency = (end - start) / 1000.0
    ttft = (first - start) / 1000.0 if first is not None and start <= first < end else None
    team = get_str(rec, "team_id", required=False)
    return {
        "request_id": get_str(rec, "request_id"), "ts_us": start,
        "model_raw": get_str(rec, "model_group", required=False) or get_str(rec, "model"),
        "task": _task(rec, metadata), "input_tokens": get_int(rec, "prompt_tokens"),
        "provider_raw": _provider(rec, "model"), "status": status.value,
        "output_tokens": get_int(rec, "completion_tokens") if status == Status.OK else 0,
        "ttft_ms": ttft if status == Status.OK else latency, "latency_ms": latency,
        "cost_usd": get_float(rec, "spend"), "tenant": team, **_needs(rec),
    }


def _error_row(rec: Any) -> dict[str, object]:
    """One ``LiteLLM_ErrorLogs`` record: a failed request with no token counts."""
    if not isinstance(rec, dict):
        raise Bad(f"record: expected an object, got {type(rec).__name__}")
    start, end = get_time_us(rec, "startTime"), get_time_us(rec, "endTime")
    assert start is not None and end is not None
    if end < start:
        raise Bad("endTime: before startTime")
    code = get_str(rec, "status_code", required=False) or ""
    status = status_from_error(get_str(rec, "exception_type", required=False) or "")
    if code.isdecimal() and status == Status.SERVER_ERROR:
        status = status_from_error(code)
    latency = (end - start) / 1000.0
    return {
        "request_id": get_str(rec, "request_id"), "ts_us": start,
        "model_raw": get_str(rec, "model_group", required=False) or get_str(rec, "litellm_model_name"),
        "task": "chat", "input_tokens": 0, "provider_raw": _provider(rec, "litellm_model_name"),
        "status": status.value if status != Status.OK else Status.SERVER_ERROR.value, "output_tokens": 0,
        "ttft_ms": latency, "latency_ms": latency, "cost_usd": 0.0,
    }


def import_litellm(path: str | Path, ctx: ImportContext, *, error_logs: str | Path | None = None) -> ImportResult:
    """Import a spend-log export (and optionally an error-log export) into the request-log schema."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"File not found: {path}")
    rows: list[dict[str, object]] = []
    _parse(path, ctx, _spend_row, rows, set())
    if error_logs is not None:
        errors_path = Path(error_logs)
        if not errors_path.exists():
            raise SchemaError(f"File not found: {errors_path}")
        n_spend = len(rows)
        _parse(errors_path, ctx, _error_row, rows, {str(r["request_id"]) for r in rows})
        if len(rows) > n_spend:
            ctx.notes.append(f"{len(rows) - n_spend} failed requests come from the error log, which records no token "
                             "counts: their input_tokens are 0 (unknown).")
    if not ctx.config.randomised:
        ctx.notes.append("LiteLLM spend logs carry no propensity and no randomised router config was given: "
                         "propensities are null.")
    return finalize(stage_frame(rows), ctx, rows_read=len(rows) + ctx.ledger.n_malformed + ctx.ledger.n_skipped)


def _parse(path: Path, ctx: ImportContext, parse: Any, rows: list[dict[str, object]], seen: set[str]) -> None:
    """Parse one file into ``rows``; records that fail go to the ledger."""
    for where, rec in _records(path, ctx):
        try:
            row = parse(rec)
        except Bad as bad:
            ctx.ledger.bad(bad.reason, f"{path.name} {where}", rec)
            continue
        if parse is _error_row and row["request_id"] in seen:
            ctx.ledger.skip("error-log row of a request already in the spend log (the spend-log row is kept)",
                            f"{path.name} {where}")
            continue
        row["_where"] = f"{path.name} {where}"
        rows.append(row)
