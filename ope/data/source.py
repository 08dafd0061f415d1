"""A parquet log read lazily in batches: its files, its size, and the ids that repeat in it.

Batches come from one polars scan over every file (`ope.data.readers.log_files` order: a file, the
sorted parquet files of a directory, or a glob's sorted matches), rows in file order, each batch
``batch_rows`` rows (the last one shorter), so memory holds one batch at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ope.data.readers import PARQUET_SUFFIXES, log_files
from ope.errors import SchemaError

__all__ = ["LogSource", "HASH_SEED"]

#: seed of the request_id hash used to find repeated ids (any fixed value)
HASH_SEED = 7_2025
#: id hashes held at once when looking for repeats (8 bytes each, twice while sorted: ~64 MB)
IDS_PER_PASS = 4_000_000


@dataclass(frozen=True, slots=True)
class LogSource:
    """The parquet files of a log and their total row count (from the files' metadata)."""

    label: str
    files: tuple[Path, ...]
    n_rows: int

    @classmethod
    def open(cls, path: str | Path) -> LogSource:
        """The log at ``path``; it must be parquet (a file, a directory or a glob of files)."""
        files = log_files(path)
        other = [f for f in files if f.suffix.lower() not in PARQUET_SUFFIXES]
        if other:
            msg = f"Streaming reads parquet logs only; {other[0]} is not parquet. Convert it once, e.g. with pl.scan_csv(...).sink_parquet(...)."
            raise SchemaError(msg)
        try:
            n_rows = int(pl.scan_parquet(files).select(pl.len()).collect().item())
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SchemaError(f"Cannot read the parquet files of {path}: {exc}") from exc
        if n_rows == 0:
            raise SchemaError(f"{path} is empty: it has no rows.")
        return cls(str(path), tuple(files), n_rows)

    def scan(self) -> pl.LazyFrame:
        """All files as one lazy frame, in file order."""
        return pl.scan_parquet(list(self.files))

    @property
    def columns(self) -> list[str]:
        """Column names of the log."""
        return self.scan().collect_schema().names()

    def batches(self, batch_rows: int) -> Iterator[pl.DataFrame]:
        """Consecutive batches of ``batch_rows`` rows in file and row order."""
        yield from self.scan().collect_batches(chunk_size=batch_rows, maintain_order=True)

    def repeated_ids(self) -> pl.Series:
        """Every request_id that occurs more than once (usually none), found in bounded memory.

        Hashes of the ids are sorted in slices of the hash range (one pass per slice, at most about
        `IDS_PER_PASS` hashes at once: memory does not grow with the log); the ids behind repeated
        hashes are then read and compared exactly, so a hash collision is harmless.
        """
        if "request_id" not in self.columns:
            return pl.Series("request_id", [], dtype=pl.String)
        ids = pl.col("request_id").cast(pl.String)
        hashed = self.scan().select(ids.hash(HASH_SEED).alias("h"))
        passes = max(1, math.ceil(self.n_rows / IDS_PER_PASS))
        repeated = []
        for part in range(passes):
            query = hashed.filter(pl.col("h") % passes == part) if passes > 1 else hashed
            h = np.sort(query.collect(engine="streaming")["h"].to_numpy())  # a sort holds 8 bytes per id; a group-by ~60
            repeated.append(np.unique(h[1:][h[1:] == h[:-1]]))
        candidates = pl.Series("h", np.concatenate(repeated), dtype=pl.UInt64)
        if candidates.len() == 0:
            return pl.Series("request_id", [], dtype=pl.String)
        found = self.scan().select(ids).filter(ids.hash(HASH_SEED).is_in(candidates.implode())).collect(engine="streaming")
        values = found["request_id"].drop_nulls()
        return values.filter(values.is_duplicated()).unique().sort()
