"""OpenRouter generation records (the JSON of ``GET /api/v1/generation``, one per generation).

Accepted as NDJSON (one response per line), a JSON array, or single responses; the ``{"data": ...}``
envelope is optional. ``model`` is the model the client asked for, ``provider_name`` the provider
that served the answer. ``latency`` is read as the time to the first token and
``generation_time`` as the time spent generating after it (both in ms). ``provider_responses``
lists every provider attempt: attempts that did not return HTTP 2xx are *fallbacks*; they stay
visible in the ``failed_providers`` column and the report counts them, and a request served after
a fallback gets no reconstructed propensity (the served arm was not the router's random draw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ope.errors import SchemaError
from ope.importers.build import ImportContext, ImportResult, finalize, stage_frame
from ope.importers.common import Bad, get_float, get_int, get_str, get_time_us, json_records, status_from_finish

__all__ = ["import_openrouter"]


def _attempts(rec: dict[str, Any]) -> list[str]:
    """Providers of the failed attempts before the one that served (non-2xx ``provider_responses``)."""
    responses = rec.get("provider_responses")
    if responses is None:
        return []
    if not isinstance(responses, list):
        raise Bad(f"provider_responses: expected a list, got {type(responses).__name__}")
    failed = []
    for i, resp in enumerate(responses):
        if not isinstance(resp, dict):
            raise Bad(f"provider_responses[{i}]: expected an object, got {type(resp).__name__}")
        status = resp.get("status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, (int, float))):
            raise Bad(f"provider_responses[{i}].status: expected an HTTP status code, got {status!r:.40}")
        if status is None or not 200 <= int(status) < 300:
            failed.append(get_str(resp, "provider_name", required=False) or "<unknown>")
    return failed


def _row(rec: Any) -> dict[str, object] | None:
    """One generation record as a stage row; None for a cancelled generation (no outcome)."""
    if not isinstance(rec, dict):
        raise Bad(f"record: expected an object, got {type(rec).__name__}")
    if rec.get("cancelled") is True:
        return None
    ttft, generation = get_float(rec, "latency"), get_float(rec, "generation_time")
    assert ttft is not None and generation is not None
    input_tokens = get_int(rec, "tokens_prompt", required=False)
    if input_tokens is None:
        input_tokens = get_int(rec, "native_tokens_prompt")
    output_tokens = get_int(rec, "tokens_completion", required=False)
    if output_tokens is None:
        output_tokens = get_int(rec, "native_tokens_completion")
    status = status_from_finish(get_str(rec, "finish_reason", required=False))
    streamed = rec.get("streamed")
    app = get_str(rec, "app_id", required=False)
    return {
        "request_id": get_str(rec, "id"), "ts_us": get_time_us(rec, "created_at"),
        "model_raw": get_str(rec, "model"), "task": "chat", "input_tokens": input_tokens,
        "provider_raw": get_str(rec, "provider_name"), "status": status.value, "output_tokens": output_tokens,
        "ttft_ms": ttft if streamed is not False else None, "latency_ms": ttft + generation,
        "cost_usd": get_float(rec, "total_cost"), "tenant": None if app is None else f"app-{app}",
        "streamed": streamed if isinstance(streamed, bool) else None, "failed_providers": _attempts(rec),
    }


def import_openrouter(path: str | Path, ctx: ImportContext) -> ImportResult:
    """Import OpenRouter generation records into the request-log schema."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"File not found: {path}")
    rows: list[dict[str, object]] = []
    for where, rec in json_records(path, ctx.ledger):
        try:
            row = _row(rec)
        except Bad as bad:
            ctx.ledger.bad(bad.reason, where, rec)
            continue
        if row is None:
            ctx.ledger.skip("cancelled by the client (no outcome to evaluate)", where)
            continue
        row["_where"] = where
        rows.append(row)
    if not ctx.config.randomised:
        ctx.notes.append("OpenRouter records carry no propensity and no randomised router config was given: "
                         "propensities are null.")
    return finalize(stage_frame(rows), ctx, rows_read=len(rows) + ctx.ledger.n_malformed + ctx.ledger.n_skipped)
