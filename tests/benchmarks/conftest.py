"""Shared store for the estimator benchmarks, and a summary table at the end of the run.

Every benchmark records its measurements (time, peak memory of its worker process) in a
session-wide store, later benchmarks compute ratios against earlier ones, and the summary below
prints them all — so a plain ``pytest tests/benchmarks --benchmark-enable -n 0`` shows the ratios
without ``-s``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

RESULTS: pytest.StashKey[dict[str, dict[str, Any]]] = pytest.StashKey()


@pytest.fixture(scope="session")
def bench_results(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """``{"cases": {name: measurements}, "ratios": {name: value}}`` shared by the benchmarks."""
    return request.config.stash.setdefault(RESULTS, {"cases": {}, "ratios": {}})


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, None)
    if not results or not results["cases"]:
        return
    tr = terminalreporter
    tr.section("llm-ope estimator benchmarks (worker wall time, worker peak RSS)")
    tr.write_line(f"{'case':<34} {'rows':>12} {'seconds':>9} {'est. s':>9} {'peak RSS MB':>12}")
    for name, case in results["cases"].items():
        est = case.get("estimator_seconds")
        tr.write_line(f"{name:<34} {case['n']:>12,} {case['seconds']:>9.2f} "
                      f"{'' if est is None else f'{est:.2f}':>9} {case['peak_rss_mb']:>12.0f}")
    if results["ratios"]:
        tr.write_line("ratios:")
        for name, value in results["ratios"].items():
            tr.write_line(f"  {name:<60} {value:8.3f}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks are slow tests too: the default run executes them once at small size, ``-m "not slow"`` skips them."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    """Measuring under pytest-xdist measures nothing (pytest-benchmark turns itself off there): say so, in one line."""
    if config.getoption("benchmark_enable", False) and config.getoption("numprocesses", 0):
        raise pytest.UsageError("--benchmark-enable measures in one process: add -n 0 (the project runs tests on 2 xdist workers).")

