"""Work a streamed run overlaps with its numpy sums: reading and checking the next batch, writing action files.

Polars and pyarrow release the GIL while they read, validate and write, and the per-batch sums run
BLAS on one thread, so on two cores one batch's reading and the last batch's writing run beside
the current batch's arithmetic. At most one batch is read ahead and one batch's writes are pending:
memory stays bounded by a few batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["BackgroundWrites", "prefetched", "writes"]

T = TypeVar("T")
_END = object()


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items`` with the next one produced in a background thread while the caller works on this one.

    Errors raised while producing an item are raised here, in order; the source is only ever
    advanced by one thread at a time, and closed when this generator ends or is closed.
    """
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ope-read") as pool:
            ahead: Future[object] = pool.submit(next, items, _END)
            while (item := ahead.result()) is not _END:
                ahead = pool.submit(next, items, _END)
                yield item  # type: ignore[misc]
    finally:  # the pool has waited for any read under way: the source is closed (its files too) by this thread alone
        close = getattr(items, "close", None)
        if close is not None:
            close()


class BackgroundWrites:
    """Parquet tables written by one background thread, at most one batch behind (`writes`)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._pending: list[Future[None]] = []

    def submit(self, tables: dict[str, pa.Table], writers: dict[str, pq.ParquetWriter]) -> None:
        """Write one batch's tables after waiting for the previous batch's (raising its error, if any)."""
        self.wait()
        self._pending = [self._pool.submit(writers[name].write_table, table) for name, table in tables.items()]

    def wait(self) -> None:
        """Every submitted write done."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


@contextmanager
def writes() -> Iterator[BackgroundWrites]:
    """`BackgroundWrites` whose last writes are finished (or their error raised) when the block ends normally.

    However the block ends, no write is under way once it has: enter it inside the block that
    closes the writers (``with action_writers(...) as writers, writes() as background:``).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ope-write") as pool:
        background = BackgroundWrites(pool)
        yield background
        background.wait()
