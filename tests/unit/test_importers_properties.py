"""Hypothesis: corrupted records never crash an importer and every record is accounted for."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ope.data.catalog import Catalog, load_catalog
from ope.importers import ImportResult, MalformedRecordError, import_logs

FIXTURES = Path(__file__).parents[1] / "fixtures" / "importers"
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**15), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
cell_text = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10), st.just(""),
                      st.sampled_from(["-1", "1e309", "NaN", "2025-13-45 99:99:99", "0"]))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(FIXTURES / "catalog.csv")


def _check(path: Path, fmt: str, catalog: Catalog, n_records: int | None, **kwargs: Any) -> ImportResult | None:
    """Import leniently (accounting must balance) and strictly (fatal iff something was malformed)."""
    try:
        result = import_logs(fmt, path, catalog=catalog, **kwargs)
    except MalformedRecordError:        # every record malformed: nothing to write is fine, a crash is not
        return None
    report = result.report
    assert report.rows_read == report.rows_written + report.n_malformed + report.n_skipped
    assert result.errors.height == report.n_malformed
    if n_records is not None:
        assert report.rows_read == n_records
    if report.n_malformed:
        with pytest.raises(MalformedRecordError, match="malformed record"):
            import_logs(fmt, path, catalog=catalog, strict=True, **kwargs)
    return result


def _mutate(data: st.DataObject, record: dict[str, Any]) -> dict[str, Any]:
    record = copy.deepcopy(record)
    for key in data.draw(st.lists(st.sampled_from(sorted(record)), max_size=4, unique=True)):
        if data.draw(st.booleans()):
            del record[key]
        else:
            record[key] = data.draw(json_values)
    return record


def _openrouter_records() -> list[dict[str, Any]]:
    lines = (FIXTURES / "openrouter_generations.ndjson").read_text().splitlines()[:-1]   # last line is truncated
    return [json.loads(line)["data"] for line in lines]


@SETTINGS
@given(data=st.data())
def test_openrouter_corrupted_records(tmp_path: Path, catalog: Catalog, data: st.DataObject) -> None:
    records = [_mutate(data, r) for r in data.draw(st.lists(st.sampled_from(_openrouter_records()), min_size=1, max_size=6))]
    lines = [json.dumps({"data": r}) for r in records]
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(1, max(1, len(lines[-1]) - 1)))
        lines[-1] = lines[-1][:cut]
    path = tmp_path / "gen.ndjson"
    path.write_text("\n".join(lines) + "\n")
    _check(path, "openrouter", catalog, len(lines), router_config=FIXTURES / "openrouter_router.toml")


@SETTINGS
@given(data=st.data())
def test_litellm_corrupted_cells(tmp_path: Path, catalog: Catalog, data: st.DataObject) -> None:
    frame = pl.read_csv(FIXTURES / "litellm_spend_logs.csv", infer_schema=False)
    rows = frame.rows(named=True)
    picked = [dict(rows[i]) for i in data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=6))]
    for row in picked:
        for key in data.draw(st.lists(st.sampled_from(frame.columns), max_size=3, unique=True)):
            row[key] = data.draw(cell_text)
    path = tmp_path / "spend.csv"
    pl.DataFrame(picked, schema=dict.fromkeys(frame.columns, pl.String)).write_csv(path)
    _check(path, "litellm", catalog, len(picked), router_config=FIXTURES / "litellm_router.toml")


@SETTINGS
@given(data=st.data())
def test_litellm_json_export_with_truncated_lines(tmp_path: Path, catalog: Catalog, data: st.DataObject) -> None:
    rows = pl.read_csv(FIXTURES / "litellm_spend_logs.csv", infer_schema=False).rows(named=True)
    records = [_mutate(data, rows[i]) for i in data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=5))]
    lines = [json.dumps(r) for r in records]
    broken = data.draw(st.integers(0, len(lines) - 1))
    lines[broken] = lines[broken][: data.draw(st.integers(1, len(lines[broken]) - 1))]
    path = tmp_path / "spend.ndjson"
    path.write_text("\n".join(lines) + "\n")
    _check(path, "litellm", catalog, len(lines))


@SETTINGS
@given(data=st.data())
def test_burstgpt_corrupted_cells(tmp_path: Path, catalog: Catalog, data: st.DataObject) -> None:
    frame = pl.read_csv(FIXTURES / "burstgpt_trace.csv", infer_schema=False)
    rows = [dict(r) for r in frame.rows(named=True)]
    for row in data.draw(st.lists(st.sampled_from(rows), max_size=8)):
        row[data.draw(st.sampled_from(frame.columns))] = data.draw(cell_text)
    path = tmp_path / "trace.csv"
    pl.DataFrame(rows, schema=dict.fromkeys(frame.columns, pl.String)).write_csv(path)
    _check(path, "burstgpt", catalog, len(rows))


@SETTINGS
@given(data=st.data())
def test_otel_corrupted_spans(tmp_path: Path, catalog: Catalog, data: st.DataObject) -> None:
    doc = json.loads((FIXTURES / "otel_genai_spans.json").read_text())
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    for span in data.draw(st.lists(st.sampled_from(spans), max_size=4)):
        attributes = span.get("attributes")
        if data.draw(st.booleans()) and isinstance(attributes, list) and attributes and isinstance(attributes[0], dict):
            attr = data.draw(st.sampled_from(attributes))
            attr["value"] = data.draw(st.one_of(json_values, st.dictionaries(
                st.sampled_from(["stringValue", "intValue", "doubleValue", "boolValue", "arrayValue"]), json_values,
                min_size=1, max_size=1)))
        else:
            key = data.draw(st.sampled_from(sorted(span)))
            span[key] = data.draw(json_values)
    path = tmp_path / "spans.ndjson"
    path.write_text(json.dumps(doc) + "\n" + json.dumps(doc)[:-40] + "\n")    # a second, truncated export line
    result = _check(path, "otel", catalog, None)
    assert result is None or result.report.malformed.get("truncated or invalid JSON line") == 1
