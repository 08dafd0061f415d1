"""Encoding the per-request action files, the floor of a streamed run's speed (docs/large_logs.md).

A run writes, for every policy, ``request_id, arm, probability`` of each non-zero action
probability (DESIGN §5): with the quickstart's 4 heuristic policies and ~5 eligible arms per
request, 2·10⁷ rows per 10⁶ requests. This measures writing them as the run does
(`ope.evaluation.batch.action_writer`, batches of 50,000 requests) and, in the same run, the same
tables with other parquet codecs, as ratios to the run's writer. Nothing asserts a time; the
files are read back and checked.

Sizes come from ``LLM_OPE_BENCH_SCALE``: ``full`` (10⁶ requests; the tables held in memory take
~2.5 GB) is the default with ``--benchmark-enable -n 0``, ``small`` (2·10⁴) otherwise::

    python -m pytest tests/benchmarks/test_bench_action_files.py --benchmark-enable -n 0 -s
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ope.evaluation.actions import ACTION_SCHEMA, action_writer

pytestmark = pytest.mark.benchmark

SCALES = {"small": 20_000, "full": 1_000_000}
POLICIES, ELIGIBLE, ARMS, BATCH = 4, 5, 58, 50_000
CODECS = ["zstd", "lz4", "none"]


def _tables(requests: int) -> list[pa.Table]:
    """One batch's action table per policy and batch: 5 eligible arms of 58 per request, random probabilities."""
    rng = np.random.default_rng(0)
    names = pa.array([f"provider-{a:02d}/deepseek-v3.2" for a in range(ARMS)], type=pa.large_string())
    out = []
    for start in range(0, requests, BATCH):
        n = min(BATCH, requests - start)
        ids = pa.array([f"req-{i:012d}" for i in range(start, start + n)], type=pa.large_string())
        rows = np.repeat(np.arange(n), ELIGIBLE)
        for _ in range(POLICIES):
            arms = rng.integers(0, ARMS, rows.size)
            out.append(pa.table([ids.take(pa.array(rows)), names.take(pa.array(arms)), pa.array(rng.random(rows.size))], schema=ACTION_SCHEMA))
    return out


def _write(tables: list[pa.Table], folder: Path, compression: str | None = None) -> float:
    """Seconds to write the tables into one file per policy, as the run does (or with another codec)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"policy{p}.parquet" for p in range(POLICIES)]
    t = time.perf_counter()
    writers = [action_writer(path) if compression is None else
               pq.ParquetWriter(path, ACTION_SCHEMA, use_dictionary=["arm"], compression=compression) for path in paths]
    for i, table in enumerate(tables):
        writers[i % POLICIES].write_table(table)
    for writer in writers:
        writer.close()
    return time.perf_counter() - t


@pytest.mark.benchmark(group="action-files")
def test_encoding_the_action_files(benchmark: Any, bench_results: dict[str, Any], tmp_path: Path) -> None:
    name = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if benchmark.disabled else "full")
    requests = SCALES.get(name, SCALES["full"])
    tables = _tables(requests)
    seconds = benchmark.pedantic(_write, args=(tables, tmp_path / "run"), rounds=3, iterations=1)
    written = pq.read_table(tmp_path / "run" / "policy0.parquet")
    assert written.num_rows == requests * ELIGIBLE
    assert written.slice(0, 1000).equals(pa.concat_tables(tables[0::POLICIES]).slice(0, 1000))
    size = sum(p.stat().st_size for p in (tmp_path / "run").iterdir())
    extra: dict[str, Any] = {"requests": requests, "action_rows": requests * ELIGIBLE * POLICIES, "seconds": seconds, "mb": size / 1e6}
    for codec in CODECS:
        other = _write(tables, tmp_path / codec, codec)
        extra[f"{codec}_seconds"] = other
        extra[f"{codec}_mb"] = sum(p.stat().st_size for p in (tmp_path / codec).iterdir()) / 1e6
        bench_results["ratios"][f"action files: {codec} / the run's writer (snappy), time"] = other / seconds
        assert pq.read_table(tmp_path / codec / "policy0.parquet").equals(written)
    benchmark.extra_info.update(extra)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bench_results["cases"]["action files (4 policies)"] = {"n": requests, "seconds": seconds, "peak_rss_mb": peak}
    print(f"\naction files for {requests:,} requests ({extra['action_rows']:,} rows): "
          + ", ".join(f"{k} {v:.2f}" for k, v in extra.items() if k.endswith(("seconds", "mb"))))
