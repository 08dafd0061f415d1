"""Validation of a log batch by batch, with the same error table and quarantine file as on the whole log.

Every rule of `ope.data.validate` is per row except repeated request_ids, which `LogSource.repeated_ids`
finds beforehand; the batches' problems are merged into one table (counts over the whole log,
the first request_ids in log order, rules in the order they are checked) and the bad rows are
appended to the quarantine file batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from ope.data.catalog import Catalog
from ope.data.readers import table_format
from ope.data.source import LogSource
from ope.data.validate import SHOW_IDS, BatchCheck, Problem, check_batch

__all__ = ["ProblemTally", "QuarantineWriter", "checked_batches"]

Key = tuple[str, str]


class ProblemTally:
    """The problems of many batches merged into the table `validate_logs` gives on the whole log."""

    def __init__(self) -> None:
        self.rank: dict[Key, int] = {}
        self.counts: dict[Key, int] = {}
        self.ids: dict[Key, list[str]] = {}
        self.fatal: set[Key] = set()
        self.n_input = 0

    def add(self, check: BatchCheck) -> None:
        """Count one batch's problems."""
        self.n_input += check.n_input
        for key in check.checked:
            self.rank.setdefault(key, len(self.rank))
        for p in check.problems:
            key = (p.column, p.rule)
            self.rank.setdefault(key, len(self.rank))
            self.counts[key] = self.counts.get(key, 0) + p.n_rows
            shown = self.ids.setdefault(key, [])
            shown.extend(p.request_ids[: SHOW_IDS - len(shown)])
            if p.fatal:
                self.fatal.add(key)

    @property
    def has_fatal(self) -> bool:
        """A whole column is missing or of the wrong type."""
        return bool(self.fatal)

    def problems(self) -> tuple[Problem, ...]:
        """The merged table, rules in checking order."""
        keys = sorted(self.counts, key=self.rank.__getitem__)
        return tuple(Problem(c, r, self.n_input if (c, r) in self.fatal else self.counts[(c, r)],
                             () if (c, r) in self.fatal else tuple(self.ids[(c, r)]), fatal=(c, r) in self.fatal)
                     for c, r in keys)


class QuarantineWriter:
    """Appends bad rows to one file (parquet, csv or ndjson, by extension), created at the first write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = table_format(path)
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` (no-op when empty)."""
        if frame.height == 0:
            return
        first = self.rows == 0
        if first:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "parquet":
            table = frame.to_arrow()
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        elif self.format == "ndjson":
            with open(self.path, "a", encoding="utf-8") as fh:
                frame.write_ndjson(fh)
        else:
            nested = [c for c, d in frame.schema.items() if isinstance(d, (pl.List, pl.Struct))]
            flat = frame.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join(";") for c in nested)
            with open(self.path, "a", encoding="utf-8") as fh:
                flat.write_csv(fh, include_header=first)
        self.rows += frame.height

    def close(self) -> None:
        """Finish the file."""
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


def checked_batches(source: LogSource, catalog: Catalog, batch_rows: int, repeated: pl.Series) -> Iterator[BatchCheck]:
    """Every batch of the log validated as on the whole log (``repeated`` from `LogSource.repeated_ids`)."""
    seen = pl.Series("request_id", [], dtype=pl.String)
    for raw in source.batches(batch_rows):
        if raw.height == 0:
            continue
        check = check_batch(raw, catalog, earlier_ids=seen if seen.len() else None)
        if repeated.len() and "request_id" in raw.columns:
            ids = raw["request_id"].cast(pl.String)
            seen = pl.concat([seen, ids.filter(ids.is_in(repeated.implode()))]).unique()
        yield check
