"""Shared fixtures: a tiny hand-made log and catalog, and a small simulated log on disk."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from filelock import FileLock
from threadpoolctl import threadpool_limits

#: the repository root (configs/, logs/ and docs/ of a source checkout)
ROOT = Path(__file__).resolve().parents[1]
#: the two heuristic policies most integration-test configs evaluate (TOML, no format placeholders)
OFFICIAL_AND_CHEAPEST = """
[[policies]]
name = "direct_official"
kind = "direct_official"
fallback = "cheapest"
[[policies]]
name = "cheapest"
kind = "cheapest"
epsilon = 0.05
"""


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator per test (no global seeding)."""
    return np.random.default_rng(12345)


def tiny_catalog() -> pl.DataFrame:
    """Three arms for one model (one official, one with a price change) and one arm of another model."""
    t0 = datetime(2025, 10, 1, tzinfo=UTC)
    return pl.DataFrame({
        "arm": ["maker/m1", "cheap/m1", "cheap/m1", "fast/m1", "maker/m2"],
        "provider": ["maker", "cheap", "cheap", "fast", "maker"],
        "model": ["m1", "m1", "m1", "m1", "m2"],
        "official": [True, False, False, False, True],
        "price_in_per_mtok": [1.0, 0.2, 0.1, 2.0, 0.5],
        "price_out_per_mtok": [2.0, 0.4, 0.2, 4.0, 1.0],
        "context_tokens": [32000, 8000, 8000, 128000, 32000],
        "supports_tools": [True, False, False, True, True],
        "valid_from": [t0, t0, t0 + timedelta(hours=12), t0, t0],
    })


def tiny_logs(n: int = 40) -> pl.DataFrame:
    """A valid log on `tiny_catalog`, one request every hour."""
    t0 = datetime(2025, 10, 1, tzinfo=UTC)
    arms = ["maker/m1", "cheap/m1", "fast/m1", "maker/m2"]
    arm = [arms[i % 4] for i in range(n)]
    ok = [i % 10 != 7 for i in range(n)]
    return pl.DataFrame({
        "request_id": [f"r{i:03d}" for i in range(n)],
        "ts": [t0 + timedelta(hours=i) for i in range(n)],
        "model": [a.split("/")[1] for a in arm],
        "task": ["chat" if i % 2 else "code" for i in range(n)],
        "input_tokens": [100 + 10 * i for i in range(n)],
        "arm": arm,
        "propensity": [0.5 if a.endswith("m2") else 0.25 for a in arm],
        "status": ["ok" if k else "server_error" for k in ok],
        "output_tokens": [50 + i if k else 0 for i, k in enumerate(ok)],
        "ttft_ms": [200.0 + i for i in range(n)],
        "latency_ms": [1200.0 + 30 * i if k else 200.0 + i for i, k in enumerate(ok)],
        "cost_usd": [0.001 * (1 + i % 3) if k else 0.0 for i, k in enumerate(ok)],
        "satisfaction": [(1.0 if i % 3 else 0.0) if k else None for i, k in enumerate(ok)],
        "sample_weight": [1.0 if i % 2 else 2.0 for i in range(n)],
        "needs_tools": [False] * n,
    })


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.csv"
    tiny_catalog().write_csv(path)
    return path


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small simulated log + catalog on disk (shared by end-to-end tests)."""
    from ope.simulate import write_simulation

    out = tmp_path_factory.mktemp("sim")
    return write_simulation(out, rows=6000, days=2, seed=7)


@pytest.fixture(scope="session")
def once_per_session(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[], Any]], Any]:
    """``once_per_session(key, build)``: ``build()`` computed once for the whole run and shared by every xdist worker.

    A slow module's tests are spread over both workers, and a module-scoped fixture is built again in each worker
    that gets one of them (the Monte-Carlo fixtures cost 1–3 minutes each). The first worker to ask builds it under a
    file lock in the run's shared temporary folder and pickles it there; the others wait for it and read it back
    (pytest-xdist's documented pattern). Paths inside the result stay valid: every worker sees the same disk.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base

    def get(key: str, build: Callable[[], Any]) -> Any:
        path = shared / f"once-{key}.pickle"
        with FileLock(f"{path}.lock"):
            if path.is_file():
                return pickle.loads(path.read_bytes())
            value = build()
            partial = path.with_suffix(".partial")
            partial.write_bytes(pickle.dumps(value))
            partial.replace(path)  # a worker that dies mid-write leaves no half-written result
            return value

    return get


#: BLAS and OpenMP pools of an xdist worker, held at one thread for the session (see pytest_configure)
_ONE_THREAD: list[threadpool_limits] = []


def pytest_configure(config: pytest.Config) -> None:
    """Two xdist workers on two cores: one BLAS / OpenMP thread each (and in the processes they start), or each
    worker's pools contend with the other's (the whole suite took 872 s without this, 690 s with it, same scheduling)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        _ONE_THREAD.append(threadpool_limits(limits=1))
