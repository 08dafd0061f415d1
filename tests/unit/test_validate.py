"""The validation error table: every rule names column, rule, row count and first request_ids."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from ope.data.catalog import load_catalog
from ope.data.validate import load_logs, validate_logs
from ope.errors import SchemaError
from tests.conftest import tiny_logs

Mutation = Callable[[pl.DataFrame], pl.DataFrame]


def _set(column: str, rows: list[int], value: object, dtype: pl.DataType | None = None) -> Mutation:
    def mutate(df: pl.DataFrame) -> pl.DataFrame:
        idx = pl.int_range(pl.len())
        lit = pl.lit(value, dtype=dtype or df.schema[column])
        return df.with_columns(pl.when(idx.is_in(rows)).then(lit).otherwise(pl.col(column)).alias(column))
    return mutate


ROW_ERRORS = [
    ("negative input tokens", _set("input_tokens", [3, 5], -1), "input_tokens", "must be >= 0", 2, ("r003", "r005")),
    ("negative output tokens", _set("output_tokens", [4], -5), "output_tokens", "must be >= 0", 1, ("r004",)),
    ("negative latency", _set("latency_ms", [1], -3.0), "latency_ms", "must be a finite number >= 0", 1, ("r001",)),
    ("negative ttft", _set("ttft_ms", [2], -1.0), "ttft_ms", "must be a finite number >= 0", 1, ("r002",)),
    ("infinite ttft", _set("ttft_ms", [3], float("inf")), "ttft_ms", "must be a finite number >= 0", 1, ("r003",)),
    ("propensity zero", _set("propensity", [0], 0.0), "propensity", "must be in (0, 1]", 1, ("r000",)),
    ("propensity above one", _set("propensity", [6, 8], 1.5), "propensity", "must be in (0, 1]", 2, ("r006", "r008")),
    ("propensity NaN", _set("propensity", [9], float("nan")), "propensity", "must be in (0, 1]", 1, ("r009",)),
    ("satisfaction above one", _set("satisfaction", [10], 1.2), "satisfaction", "must be in [0, 1]", 1, ("r010",)),
    ("satisfaction negative", _set("satisfaction", [11], -0.1), "satisfaction", "must be in [0, 1]", 1, ("r011",)),
    ("unknown status", _set("status", [12], "exploded"), "status", "unknown status", 1, ("r012",)),
    ("duplicate request_id", _set("request_id", [13, 14], "r001"), "request_id", "duplicate request_id", 2, ("r001", "r001")),
    ("arm not in catalog", _set("arm", [15], "ghost/m1"), "arm", "arm not in the catalog", 1, ("r015",)),
    ("arm serves another model", _set("arm", [16], "maker/m2"), "arm", "does not serve the requested model", 1, ("r016",)),
    ("null model", _set("model", [17], None), "model", "missing value (null)", 1, ("r017",)),
    ("zero sample weight", _set("sample_weight", [18], 0.0), "sample_weight", "must be a finite number > 0", 1, ("r018",)),
    ("context too long for arm", _set("input_tokens", [21], 20000), "arm", "not eligible", 1, ("r021",)),
    ("latency below ttft on ok row", _set("latency_ms", [20], 10.0), "latency_ms", "must exceed ttft_ms", 1, ("r020",)),
]


@pytest.mark.parametrize(("label", "mutate", "column", "rule", "n_rows", "ids"), ROW_ERRORS, ids=[r[0] for r in ROW_ERRORS])
def test_row_errors_are_reported_with_column_rule_count_and_ids(
    catalog_file: Path, label: str, mutate: Mutation, column: str, rule: str, n_rows: int, ids: tuple[str, ...]
) -> None:
    result = validate_logs(mutate(tiny_logs()), load_catalog(catalog_file))
    matching = [p for p in result.problems if p.column == column and rule in p.rule]
    assert len(matching) == 1, result.problems
    assert matching[0].n_rows == n_rows
    assert matching[0].request_ids == ids
    assert result.logs.height == 40 - n_rows
    assert result.n_quarantined == n_rows


def test_clean_log_has_no_problems(catalog_file: Path) -> None:
    result = validate_logs(tiny_logs(), load_catalog(catalog_file))
    assert result.problems == ()
    assert result.logs.height == 40


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.drop("arm"), r"arm: missing column"),
        (lambda df: df.drop("status", "ts"), r"ts: missing column[\s\S]*status: missing column"),
        (lambda df: df.with_columns(pl.col("input_tokens").cast(pl.Float64)), r"input_tokens: wrong type: expected int, got Float64"),
        (lambda df: df.with_columns(pl.col("ts").dt.epoch("s")), r"ts: wrong type: expected datetime"),
    ],
    ids=["missing column", "two missing columns", "float tokens", "epoch timestamps"],
)
def test_column_errors_are_fatal_and_listed(catalog_file: Path, mutate: Mutation, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        validate_logs(mutate(tiny_logs()), load_catalog(catalog_file))


def test_empty_file_is_a_clear_error(tmp_path: Path, catalog_file: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SchemaError, match="empty"):
        load_logs(empty, load_catalog(catalog_file))
    header_only = tmp_path / "header.csv"
    tiny_logs().head(0).write_csv(header_only)
    with pytest.raises(SchemaError, match="no rows"):
        load_logs(header_only, load_catalog(catalog_file))


def test_csv_cells_that_do_not_parse_are_row_errors(tmp_path: Path, catalog_file: Path) -> None:
    path = tmp_path / "logs.csv"
    text = tiny_logs().write_csv()
    lines = text.splitlines()
    lines[3] = lines[3].replace("2025-10-01T02:00:00.000000+0000", "yesterday at noon").replace("2025-10-01T02:00:00", "yesterday")
    lines[5] = lines[5].replace(",140,", ",lots,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError) as info:
        load_logs(path, load_catalog(catalog_file))
    text = str(info.value)
    assert "ts: not a valid datetime — 1 row (first request_ids: r002)" in text
    assert "input_tokens: not a valid int — 1 row (first request_ids: r004)" in text


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".ndjson"])
def test_all_formats_read_the_same_rows(tmp_path: Path, catalog_file: Path, suffix: str) -> None:
    path = tmp_path / f"logs{suffix}"
    frame = tiny_logs()
    {".parquet": frame.write_parquet, ".csv": frame.write_csv, ".ndjson": frame.write_ndjson}[suffix](path)
    result = load_logs(path, load_catalog(catalog_file))
    assert result.logs.height == 40
    assert result.logs["ts"].to_list() == frame["ts"].to_list()
    assert result.logs["satisfaction"].null_count() == frame["satisfaction"].null_count()


def test_quarantine_sets_rows_aside_and_never_touches_the_input(tmp_path: Path, catalog_file: Path) -> None:
    path = tmp_path / "logs.parquet"
    bad = _set("propensity", [2, 3], 0.0)(_set("status", [7], "weird")(tiny_logs()))
    bad.write_parquet(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SchemaError, match="quarantine"):
        load_logs(path, load_catalog(catalog_file))
    quarantine = tmp_path / "bad.csv"
    result = load_logs(path, load_catalog(catalog_file), quarantine=quarantine)
    assert result.logs.height == 37 and result.n_quarantined == 3
    aside = pl.read_csv(quarantine)
    assert aside["request_id"].to_list() == ["r002", "r003", "r007"]
    assert aside["_problems"][2].startswith("status: unknown status")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_cli_validate_exit_codes(tmp_path: Path, catalog_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ope.cli import main

    good = tmp_path / "good.parquet"
    tiny_logs().write_parquet(good)
    assert main(["validate", str(good), "--catalog", str(catalog_file)]) == 0
    assert "rows          40" in capsys.readouterr().out
    bad = tmp_path / "bad.parquet"
    _set("arm", [0], "ghost/m1")(tiny_logs()).write_parquet(bad)
    assert main(["validate", str(bad), "--catalog", str(catalog_file)]) == 2
    assert "arm: arm not in the catalog — 1 row (first request_ids: r000)" in capsys.readouterr().err
    q = tmp_path / "q.parquet"
    assert main(["validate", str(bad), "--catalog", str(catalog_file), "--quarantine", str(q)]) == 0
    assert pl.read_parquet(q).height == 1


def test_quarantine_never_overwrites_the_input_or_an_existing_file(tmp_path: Path, catalog_file: Path) -> None:
    path = tmp_path / "logs.csv"
    _set("status", [1], "weird")(tiny_logs()).write_csv(path)
    before = path.read_bytes()
    with pytest.raises(SchemaError, match="is the input log itself"):
        load_logs(path, load_catalog(catalog_file), quarantine=path)
    existing = tmp_path / "old.csv"
    existing.write_text("precious")
    with pytest.raises(SchemaError, match="already exists"):
        load_logs(path, load_catalog(catalog_file), quarantine=existing)
    assert path.read_bytes() == before and existing.read_text() == "precious"
