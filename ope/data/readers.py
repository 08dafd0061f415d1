"""Reading request logs and catalogs from parquet, CSV or NDJSON without changing them."""

from __future__ import annotations

import glob
from pathlib import Path

import polars as pl

from ope.errors import SchemaError

__all__ = ["read_table", "parse_timestamps", "log_files", "is_multi_file", "FORMATS"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}


def table_format(path: Path) -> str:
    """The format of a table file, from its extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        msg = f"Cannot tell the format of {path}: expected one of the extensions {known}."
        raise SchemaError(msg)
    return fmt


GLOB_CHARS = frozenset("*?[")
PARQUET_SUFFIXES = (".parquet", ".pq")


def is_multi_file(path: str | Path) -> bool:
    """Whether ``path`` names a directory or a glob pattern rather than one file."""
    return Path(path).is_dir() or bool(GLOB_CHARS & set(str(path)))


def log_files(path: str | Path) -> list[Path]:
    """The files a logs path stands for, in reading order.

    A file is itself; a directory is every parquet file under it (recursively, hidden files and
    folders skipped), sorted by path; a glob pattern (``*``, ``?``, ``[``; ``**`` recurses) is its
    matches, sorted. A directory or pattern must name parquet files only.
    """
    path = Path(path)
    if not is_multi_file(path):
        if not path.exists():
            raise SchemaError(f"File not found: {path}")
        return [path]
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in PARQUET_SUFFIXES
                       and not any(part.startswith((".", "_")) for part in f.relative_to(path).parts))
    else:
        files = sorted(Path(f) for f in glob.glob(str(path), recursive=True) if Path(f).is_file())
    if not files:
        raise SchemaError(f"No parquet files found at {path}.")
    other = [f for f in files if f.suffix.lower() not in PARQUET_SUFFIXES]
    if other:
        msg = f"A directory or glob of logs must hold parquet files only; {path} also matches {[str(f) for f in other[:3]]}."
        raise SchemaError(msg)
    return files


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a table as stored. CSV columns stay strings so that validation can report bad cells.

    A directory or glob of parquet files (`log_files`) is read as one table, files in sorted order.
    """
    if is_multi_file(path):
        files = log_files(path)
        try:
            return pl.read_parquet(files)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SchemaError(f"Cannot read the parquet files of {path} as one table: {exc}") from exc
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"File not found: {path}")
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            return pl.read_parquet(path)
        if fmt == "csv":
            return pl.read_csv(path, infer_schema=False)
        return pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as exc:
        if path.stat().st_size == 0:
            raise SchemaError(f"{path} is empty: no header and no rows.") from exc
        msg = f"Cannot read {path} as {fmt}: {exc}"
        raise SchemaError(msg) from exc


def parse_timestamps(values: pl.Series) -> pl.Series:
    """ISO 8601 strings to UTC datetimes; bad ones become null for the caller to report.

    Accepts a 'T' or a space between date and time, fractional seconds, 'Z' or a ±hh:mm offset,
    and date-only values. Strings without an offset are read as UTC (the schema's time zone).
    """
    text = values.str.strip_chars().str.replace(r"^(\d{4}-\d\d-\d\d)[ T]", "${1}T")
    text = text.str.replace(r"^(\d{4}-\d\d-\d\d)$", "${1}T00:00:00").str.replace(r"Z$", "+00:00")
    has_offset = text.str.contains(r"[+-]\d\d:?\d\d$")
    text = pl.select(pl.when(has_offset).then(text).otherwise(text + "+00:00")).to_series()
    parsed = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_zone="UTC", strict=False, time_unit="us")
    return parsed.alias(values.name)
