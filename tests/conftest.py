"""Shared fixtures: a tiny hand-made log and catalog, and a small simulated log on disk."""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl
import pytest
from filelock import FileLock, Timeout
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


def experiment_script(name: str, module: str | None = None) -> ModuleType:
    """``docs/experiments/<name>.py`` executed afresh as the module ``module`` (default ``name``), registered in
    ``sys.modules`` first: its dataclasses look their module up there (pickled results, the shared fixtures)."""
    spec = importlib.util.spec_from_file_location(module or name, ROOT / "docs" / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


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
def shared_map(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Sequence[Any], Callable[[Any], Any]], list[Any]]:
    """``shared_map(key, items, build)``: ``[build(item) for item in items]``, computed once for the whole run and
    shared by every xdist worker, each item built by whichever worker claims it first.

    A slow module's tests are spread over both workers, and a module-scoped fixture is built again in each worker that
    gets one of them (the Monte-Carlo fixtures cost 1–3 minutes each). Here a worker claims an item under a file lock
    in the run's shared temporary folder and pickles it there (pytest-xdist's documented pattern); a worker that
    arrives while another is building does not wait idle but builds the items nobody has claimed, then waits only for
    the ones still being built elsewhere. Paths inside the result stay valid: every worker sees the same disk.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # every worker's basetemp lies inside it

    def build_all(key: str, items: Sequence[Any], build: Callable[[Any], Any]) -> list[Any]:
        def claim(i: int, wait: bool) -> tuple[bool, Any]:
            path = shared / f"shared-{key}-{i}.pickle"
            lock = FileLock(f"{path}.lock")
            try:
                lock.acquire(timeout=-1 if wait else 0)
            except Timeout:
                return False, None  # another worker is building it
            try:
                if not path.is_file():  # also where the other worker's build failed: fail here with its error
                    partial = path.with_suffix(".partial")
                    partial.write_bytes(pickle.dumps(build(items[i])))
                    partial.replace(path)
                return True, pickle.loads(path.read_bytes())
            finally:
                lock.release()

        first = [claim(i, wait=False) for i in range(len(items))]
        return [value if done else claim(i, wait=True)[1] for i, (done, value) in enumerate(first)]

    return build_all


#: BLAS and OpenMP pools of an xdist worker, held at one thread for the session (see pytest_configure)
_ONE_THREAD: list[threadpool_limits] = []


def pytest_configure(config: pytest.Config) -> None:
    """Two xdist workers on two cores: one BLAS / OpenMP thread each (and in the processes they start), or each
    worker's pools contend with the other's (the whole suite took 872 s without this, 690 s with it, same scheduling)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"
        _ONE_THREAD.append(threadpool_limits(limits=1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, both workers start on the shared Monte-Carlo builds, then take the rest.

    ``--dist worksteal`` first hands the first half of the collection to one worker and the second half to the other.
    A test of every ``shared_map`` module heads both halves, so both workers build those pieces together, instead of
    one building while the other waits for it or runs out of work late. The other tests keep their order.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    by_module: dict[Path, list[pytest.Item]] = {}
    light: list[pytest.Item] = []
    for item in items:
        if "shared_map" in item.fixturenames:  # type: ignore[attr-defined]
            by_module.setdefault(item.path, []).append(item)
        else:
            light.append(item)
    first = [tests[0] for tests in by_module.values()]
    second = [tests[1] for tests in by_module.values() if len(tests) > 1]
    rest = [t for tests in by_module.values() for t in tests[2:]]
    k = max(0, len(items) // 2 - len(first))
    items[:] = first + light[:k] + second + light[k:] + rest
