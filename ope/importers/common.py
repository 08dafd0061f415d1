"""What every importer shares: the import report, malformed-record accounting and field parsing.

A record read from a gateway log ends in exactly one of three places: written to the request log,
set aside as *malformed* (a field missing, of the wrong type, or naming an unknown provider), or
*skipped* for a stated reason (e.g. an OpenTelemetry span that is not an LLM call). The report
counts all three, by reason, with a few example locations, so that
``rows_read == rows_written + malformed + skipped`` always holds and nothing vanishes silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ope.data.schema import Status
from ope.errors import SchemaError

__all__ = [
    "Bad",
    "ImportReport",
    "Ledger",
    "MalformedRecordError",
    "get_float",
    "get_int",
    "get_str",
    "get_time_us",
    "json_records",
    "status_from_error",
    "status_from_finish",
    "status_from_http",
]

#: example locations kept per reason (the rest are only counted)
N_EXAMPLES = 5
#: characters of a raw record kept in the errors file
RAW_CHARS = 2000


class MalformedRecordError(SchemaError):
    """``strict`` was asked for and some records could not be imported."""


class Bad(Exception):
    """One record cannot be imported; ``reason`` names the field and the rule broken."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Ledger:
    """Counts, example locations and raw text of malformed and skipped records."""

    malformed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)

    def bad(self, reason: str, where: str, raw: object = "") -> None:
        """Record one malformed record at ``where`` (file line, record number, request id)."""
        self.malformed[reason] += 1
        self._example(reason, where)
        text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        self.rows.append({"where": where, "reason": reason, "record": text[:RAW_CHARS]})

    def skip(self, reason: str, where: str) -> None:
        """Record one record left out on purpose (not a request, a duplicate, ...)."""
        self.skipped[reason] += 1
        self._example(reason, where)

    def _example(self, reason: str, where: str) -> None:
        shown = self.examples.setdefault(reason, [])
        if len(shown) < N_EXAMPLES:
            shown.append(where)

    @property
    def n_malformed(self) -> int:
        """Malformed records, all reasons."""
        return sum(self.malformed.values())

    @property
    def n_skipped(self) -> int:
        """Skipped records, all reasons."""
        return sum(self.skipped.values())

    def message(self, source: str) -> str:
        """Every malformed reason with its count and first locations, for ``--strict`` errors."""
        lines = [f"{source}: {self.n_malformed} malformed record(s):"]
        for reason, count in self.malformed.most_common():
            lines.append(f"  - {reason} — {count} record(s) (first: {', '.join(self.examples[reason])})")
        lines.append("Fix these records, or import without --strict to set them aside and count them in the report.")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    """What an import read, wrote, set aside and assumed."""

    format: str
    source: str
    rows_read: int
    rows_written: int
    malformed: dict[str, int]
    skipped: dict[str, int]
    examples: dict[str, tuple[str, ...]]
    fallback_attempts: int = 0
    requests_with_fallbacks: int = 0
    propensity: str = "none"
    rows_with_propensity: int = 0
    notes: tuple[str, ...] = ()
    overlap: dict[str, Any] | None = None

    @property
    def n_malformed(self) -> int:
        """Malformed records, all reasons."""
        return sum(self.malformed.values())

    @property
    def n_skipped(self) -> int:
        """Skipped records, all reasons."""
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``.import.json`` file next to the log, and the CLI output)."""
        return {
            "format": self.format, "source": self.source, "rows_read": self.rows_read,
            "rows_written": self.rows_written, "malformed": self.n_malformed, "skipped": self.n_skipped,
            "malformed_by_reason": dict(self.malformed), "skipped_by_reason": dict(self.skipped),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "fallback_attempts": self.fallback_attempts, "requests_with_fallbacks": self.requests_with_fallbacks,
            "propensity": self.propensity, "rows_with_propensity": self.rows_with_propensity,
            "notes": list(self.notes), "overlap": self.overlap,
        }


def _unwrap(obj: Any) -> list[Any]:
    """OpenRouter wraps a record as ``{"data": {...}}`` (or a page as ``{"data": [...]}``)."""
    if isinstance(obj, dict) and set(obj) <= {"data", "meta", "links"} and "data" in obj:
        inner = obj["data"]
        return list(inner) if isinstance(inner, list) else [inner]
    return [obj]


def _array_records(text: str, ledger: Ledger) -> Iterator[tuple[str, Any]]:
    """Elements of a JSON array one by one, so a truncated file still yields its complete records."""
    decoder = json.JSONDecoder()
    pos, n = text.index("[") + 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            ledger.bad("truncated JSON: the array is not closed", f"record {n + 1}", text[-200:])
            return
        if text[pos] == "]":
            return
        n += 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            ledger.bad("truncated or invalid JSON record", f"record {n}", text[pos:pos + RAW_CHARS])
            return
        for i, rec in enumerate(_unwrap(obj)):
            yield (f"record {n}" if i == 0 else f"record {n}.{i}"), rec


def json_records(path: Path, ledger: Ledger) -> Iterator[tuple[str, Any]]:
    """Records of a JSON array, a single JSON document, or NDJSON lines, with their location.

    Lines that do not parse (a truncated last line, a stray log message) are malformed records.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SchemaError(f"Cannot read {path}: {exc}") from exc
    body = text.lstrip()
    if not body:
        raise SchemaError(f"{path} is empty: no records.")
    if body.startswith("["):
        yield from _array_records(body, ledger)
        return
    if body.startswith("{"):
        try:
            whole = json.loads(body)
        except json.JSONDecodeError:
            whole = None
        if whole is not None:
            for i, rec in enumerate(_unwrap(whole)):
                yield f"record {i + 1}", rec
            return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            ledger.bad("truncated or invalid JSON line", f"line {lineno}", line)
            continue
        records = _unwrap(obj)
        if not records:
            ledger.skip('empty {"data": []} envelope (no record)', f"line {lineno}")
        for i, rec in enumerate(records):
            yield (f"line {lineno}" if i == 0 else f"line {lineno}.{i}"), rec


def _present(rec: Mapping[str, Any], key: str) -> Any:
    value = rec.get(key)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def get_str(rec: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    """A non-empty string field (numbers are accepted and written as text)."""
    value = _present(rec, key)
    if value is None:
        if required:
            raise Bad(f"{key}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Bad(f"{key}: expected a string, got {type(value).__name__}")
    return str(value).strip()


def get_int(rec: Mapping[str, Any], key: str, *, required: bool = True, default: int | None = None) -> int | None:
    """A whole number >= 0 (ints, integral floats and digit strings such as OTLP's int64 text)."""
    value = _present(rec, key)
    if value is None:
        if required and default is None:
            raise Bad(f"{key}: missing")
        return default
    if isinstance(value, bool):
        raise Bad(f"{key}: expected an integer >= 0, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        value = int(value.strip())
    if not isinstance(value, int):
        raise Bad(f"{key}: expected an integer >= 0, got {value!r:.40}")
    if value < 0:
        raise Bad(f"{key}: must be >= 0, got {value}")
    return value


def get_float(rec: Mapping[str, Any], key: str, *, required: bool = True) -> float | None:
    """A finite number >= 0 (numbers or numeric strings)."""
    value = _present(rec, key)
    if value is None:
        if required:
            raise Bad(f"{key}: missing")
        return None
    if isinstance(value, bool):
        raise Bad(f"{key}: expected a number >= 0, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Bad(f"{key}: expected a number >= 0, got {value!r:.40}") from None
    if not number >= 0 or number == float("inf"):
        raise Bad(f"{key}: must be a finite number >= 0, got {value!r:.40}")
    return number


def get_time_us(rec: Mapping[str, Any], key: str, *, required: bool = True) -> int | None:
    """An ISO 8601 timestamp (no offset means UTC) as microseconds since the epoch."""
    value = _present(rec, key)
    if value is None:
        if required:
            raise Bad(f"{key}: missing")
        return None
    if not isinstance(value, str):
        raise Bad(f"{key}: expected an ISO 8601 timestamp, got {type(value).__name__}")
    try:
        ts = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise Bad(f"{key}: not an ISO 8601 timestamp: {value!r:.40}") from None
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def status_from_http(code: int) -> Status:
    """An HTTP status code as a log status."""
    if 200 <= code < 300:
        return Status.OK
    if code == 429:
        return Status.RATE_LIMITED
    if code in (408, 504, 524):
        return Status.TIMEOUT
    if code == 413:
        return Status.CONTEXT_OVERFLOW
    if 400 <= code < 500:
        return Status.BAD_REQUEST
    return Status.SERVER_ERROR


_KEYWORDS: tuple[tuple[tuple[str, ...], Status], ...] = (
    (("contextwindow", "context_length", "contextlength", "context length", "maximum context", "too many tokens"),
     Status.CONTEXT_OVERFLOW),
    (("ratelimit", "rate_limit", "rate limit", "too many requests", "toomanyrequests"), Status.RATE_LIMITED),
    (("timeout", "timed out", "deadline"), Status.TIMEOUT),
    (("content_filter", "contentpolicy", "content_policy", "content policy", "contentfilter"), Status.CONTENT_FILTER),
    (("badrequest", "bad_request", "invalidrequest", "invalid_request", "unprocessable", "notfound", "authentication",
      "permissiondenied", "unsupportedparams"), Status.BAD_REQUEST),
)


def status_from_error(text: str) -> Status:
    """An error class, code or message (``RateLimitError``, ``"429"``, ``TimeoutError``) as a log status.

    Numbers are read as HTTP codes; otherwise keywords decide, context-window errors before
    generic bad requests; anything unrecognised is a server error.
    """
    clean = text.strip().lower()
    if clean.isdecimal():
        return status_from_http(int(clean))
    for words, status in _KEYWORDS:
        if any(w in clean for w in words):
            return status
    return Status.SERVER_ERROR


def status_from_finish(reason: str | None) -> Status:
    """A finish reason: ``length`` means the answer was cut (truncated), ``content_filter`` blocked."""
    low = (reason or "").strip().lower()
    if low in ("length", "max_tokens", "max_output_tokens"):
        return Status.TRUNCATED
    if low in ("content_filter", "safety", "blocked"):
        return Status.CONTENT_FILTER
    if low == "error":
        return Status.SERVER_ERROR
    return Status.OK
