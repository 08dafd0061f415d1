"""Reading ahead and writing behind a streamed run's batches (`ope.evaluation.io_threads`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ope.evaluation.io_threads import prefetched, writes


def test_prefetched_gives_every_item_in_order_reading_at_most_one_ahead() -> None:
    produced: list[int] = []
    threads: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(6):
            threads.add(threading.current_thread().name)
            produced.append(i)
            yield i

    got = []
    for item in prefetched(source()):
        assert len(produced) <= item + 2  # this item and at most the next one
        got.append(item)
    assert got == list(range(6))
    assert all(name.startswith("ope-read") for name in threads)


def test_prefetched_reads_the_next_item_while_the_caller_works() -> None:
    second = threading.Event()

    def source() -> Iterator[int]:
        yield 0
        second.set()
        yield 1

    items = prefetched(source())
    assert next(items) == 0
    assert second.wait(timeout=10)  # produced while the caller still holds item 0
    assert list(items) == [1]


def test_a_closed_prefetched_stream_closes_its_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(10)
        finally:
            closed.set()

    items = prefetched(source())
    assert next(items) == 0
    items.close()
    assert closed.is_set()


def test_prefetched_raises_a_source_error_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("batch 3 is broken")

    got = []
    with pytest.raises(ValueError, match="batch 3 is broken"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [1, 2]


def test_background_writes_land_in_order_and_are_finished_when_the_block_ends(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.int64())])
    paths = {"a": tmp_path / "a.parquet", "b": tmp_path / "b.parquet"}
    writers = {name: pq.ParquetWriter(path, schema) for name, path in paths.items()}
    with writes() as background:
        for start in range(0, 30, 10):
            background.submit({name: pa.table({"x": list(range(start, start + 10))}, schema=schema) for name in paths}, writers)
    for writer in writers.values():
        writer.close()
    for path in paths.values():
        assert pq.read_table(path)["x"].to_pylist() == list(range(30))


class _Broken:
    def write_table(self, table: pa.Table) -> None:
        raise OSError("disk full")


class _Slow:
    def __init__(self) -> None:
        self.done = False

    def write_table(self, table: pa.Table) -> None:
        time.sleep(0.2)
        self.done = True


def test_no_write_is_under_way_once_the_block_ends_with_an_error() -> None:
    slow = _Slow()
    with pytest.raises(ValueError, match="the batch failed"), writes() as background:
        background.submit({"a": pa.table({"x": [1]})}, {"a": slow})  # type: ignore[dict-item]
        raise ValueError("the batch failed")
    assert slow.done  # so the writers may be closed right after


def test_a_failed_background_write_is_raised_at_the_next_batch() -> None:
    table = pa.table({"x": [1]})
    with writes() as background:
        background.submit({"a": table}, {"a": _Broken()})  # type: ignore[dict-item]
        with pytest.raises(OSError, match="disk full"):
            background.submit({"a": table}, {"a": _Broken()})  # type: ignore[dict-item]
    with pytest.raises(OSError, match="disk full"), writes() as background:
        background.submit({"a": table}, {"a": _Broken()})  # type: ignore[dict-item]
