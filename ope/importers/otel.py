"""OpenTelemetry GenAI client spans, from an OTLP JSON export (``{"resourceSpans": [...]}``).

The file is one OTLP ``ExportTraceServiceRequest`` document, or one per line as the collector's
file exporter writes them. Every span is read; a span is an LLM request when its
``gen_ai.operation.name`` is ``chat``, ``text_completion`` or ``generate_content`` (or, without an
operation name, when it has ``gen_ai.request.model``); other spans (tools, agents, HTTP) are
skipped and counted. The serving provider is the one ``server.address`` names when the catalog knows
it (an OpenAI SDK pointed at ``api.together.xyz`` reports ``gen_ai.provider.name = openai``), else
``gen_ai.provider.name`` (``gen_ai.system`` in conventions before 1.37). OTel carries no cost: it
comes from catalog prices, so a catalog is required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ope.data.schema import Status
from ope.errors import SchemaError
from ope.importers.build import ImportContext, ImportResult, finalize, stage_frame
from ope.importers.common import (
    Bad,
    get_int,
    get_str,
    json_records,
    status_from_error,
    status_from_finish,
)
from ope.importers.names import host_provider

__all__ = ["import_otel"]

_INFERENCE = {"chat", "text_completion", "generate_content"}
_STATUS_ERROR = 2
_TTFT_EVENTS = ("first_chunk", "first_token")


def _value(value: Any) -> Any:
    """An OTLP ``AnyValue`` (``{"stringValue": ...}``, ``{"intValue": "12"}``, arrays) as Python."""
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "arrayValue":
        values = inner.get("values") if isinstance(inner, dict) else None
        return [_value(v) for v in values] if isinstance(values, list) else None
    if kind == "intValue":
        return int(inner) if isinstance(inner, (int, str)) and str(inner).lstrip("-").isdecimal() else inner
    return inner


def _attributes(items: Any, where: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise Bad(f"{where}: expected a list of key/value pairs")
    return {kv["key"]: _value(kv.get("value")) for kv in items if isinstance(kv, dict) and isinstance(kv.get("key"), str)}


def _nanos(span: dict[str, Any], key: str) -> int:
    value = get_int(span, key)
    assert value is not None
    return value


def _ttft_ms(span: dict[str, Any], attrs: dict[str, Any], start: int) -> float | None:
    """``gen_ai.response.time_to_first_chunk`` (seconds), else a first-chunk/first-token span event."""
    seconds = attrs.get("gen_ai.response.time_to_first_chunk")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds) * 1000.0
    events = span.get("events")
    for event in events if isinstance(events, list) else []:
        if isinstance(event, dict) and any(k in str(event.get("name", "")) for k in _TTFT_EVENTS):
            at = get_int(event, "timeUnixNano", required=False)
            if at is not None and at >= start:
                return (at - start) / 1e6
    return None


def _status(span: dict[str, Any], attrs: dict[str, Any]) -> Status:
    error = attrs.get("error.type")
    if error not in (None, "", "_OTHER"):
        return status_from_error(str(error))
    code = (span.get("status") or {}).get("code") if isinstance(span.get("status"), dict) else None
    if code in (_STATUS_ERROR, "STATUS_CODE_ERROR"):
        return Status.SERVER_ERROR
    reasons = attrs.get("gen_ai.response.finish_reasons")
    first = reasons[0] if isinstance(reasons, list) and reasons else reasons
    return status_from_finish(first if isinstance(first, str) else None)


def _row(span: Any, tenant: str | None) -> dict[str, object] | None:
    """One span as a stage row; None when it is not an LLM inference span."""
    if not isinstance(span, dict):
        raise Bad(f"span: expected an object, got {type(span).__name__}")
    attrs = _attributes(span.get("attributes"), "attributes")
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None and not isinstance(operation, str):
        raise Bad(f"gen_ai.operation.name: expected a string, got {type(operation).__name__}")
    if operation not in _INFERENCE and not (operation is None and "gen_ai.request.model" in attrs):
        return None
    start, end = _nanos(span, "startTimeUnixNano"), _nanos(span, "endTimeUnixNano")
    if end < start:
        raise Bad("endTimeUnixNano: before startTimeUnixNano")
    status = _status(span, attrs)
    failed = status not in (Status.OK, Status.TRUNCATED, Status.CONTENT_FILTER)
    latency = (end - start) / 1e6
    provider = get_str(attrs, "gen_ai.provider.name", required=False) or get_str(attrs, "gen_ai.system", required=False)
    if provider is None:
        raise Bad("gen_ai.provider.name: missing")
    trace, span_id = get_str(span, "traceId"), get_str(span, "spanId")
    return {
        "request_id": f"{trace}-{span_id}", "ts_us": start // 1000,
        "model_raw": get_str(attrs, "gen_ai.request.model", required=False) or get_str(attrs, "gen_ai.response.model"),
        "task": operation if operation in ("text_completion", "generate_content") else "chat",
        "input_tokens": get_int(attrs, "gen_ai.usage.input_tokens", default=0 if failed else None),
        "provider_raw": provider, "provider_alt": host_provider(get_str(attrs, "server.address", required=False)),
        "status": status.value,
        "output_tokens": 0 if failed else get_int(attrs, "gen_ai.usage.output_tokens"),
        "ttft_ms": latency if failed else _ttft_ms(span, attrs, start), "latency_ms": latency, "cost_usd": None,
        "tenant": tenant,
        "streamed": attrs.get("gen_ai.request.stream") if isinstance(attrs.get("gen_ai.request.stream"), bool) else None,
    }


def _spans(doc: Any) -> list[tuple[str, str | None, Any]]:
    """(location, service name, span) for every span of one OTLP document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans"), list):
        raise Bad("resourceSpans: missing (not an OTLP JSON trace export)")
    out = []
    for r, resource_spans in enumerate(doc["resourceSpans"]):
        if not isinstance(resource_spans, dict):
            raise Bad(f"resourceSpans[{r}]: expected an object")
        resource = resource_spans.get("resource") if isinstance(resource_spans.get("resource"), dict) else {}
        service = _attributes(resource.get("attributes"), "resource.attributes").get("service.name")
        service = service if isinstance(service, str) else None
        scopes = resource_spans.get("scopeSpans") or []
        if not isinstance(scopes, list):
            raise Bad(f"resourceSpans[{r}].scopeSpans: expected a list")
        for s, scope in enumerate(scopes):
            spans = scope.get("spans") if isinstance(scope, dict) else None
            if not isinstance(spans, list):
                raise Bad(f"resourceSpans[{r}].scopeSpans[{s}].spans: expected a list")
            out += [(f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]", service, span) for i, span in enumerate(spans)]
    return out


def import_otel(path: str | Path, ctx: ImportContext) -> ImportResult:
    """Import GenAI inference spans into the request-log schema (costs from the catalog)."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"File not found: {path}")
    if ctx.catalog is None:
        raise SchemaError("OpenTelemetry spans carry no cost: `ope import otel` needs --catalog to price requests.")
    rows: list[dict[str, object]] = []
    for where, doc in json_records(path, ctx.ledger):
        try:
            spans = _spans(doc)
        except Bad as bad:
            ctx.ledger.bad(bad.reason, where, doc)
            continue
        for place, service, span in spans:
            location = f"{where} {place}"
            try:
                row = _row(span, service)
            except Bad as bad:
                ctx.ledger.bad(bad.reason, location, span)
                continue
            if row is None:
                ctx.ledger.skip("not a GenAI inference span (tool, agent, embeddings or non-GenAI span)", location)
                continue
            row["_where"] = location
            rows.append(row)
    ctx.notes.append("OpenTelemetry spans carry no propensity" + ("" if ctx.config.randomised else ": propensities are null."))
    return finalize(stage_frame(rows), ctx, rows_read=len(rows) + ctx.ledger.n_malformed + ctx.ledger.n_skipped)
