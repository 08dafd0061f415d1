"""Streamed `ope run` at log scale: rows per second and peak memory (issue 9, item 5; docs/large_logs.md).

What is measured, on a simulated log written as time-ordered parquet partitions
(`ope simulate --partitioned`, the default world: 58 arms, 7 metrics):

* ``heuristic-ips``: the quickstart's heuristic policies (direct official access, cheapest,
  price-weighted, fastest) with IPS and SNIPS — no outcome models;
* ``dr-family-constrained``: the same policies plus a constrained router, with all seven
  estimators (IPS, SNIPS, DM, DR, SNDR, Switch-DR, DRos) and LightGBM q̂ cross-fitted on a
  training sample of at most 100,000 rows.

Both use normal intervals, the value and the paired difference and relative change against the
baseline, per-day, per-model and per-task tables and the action files, streamed in batches of
50,000 rows (the default ``batch_rows``), on one machine (``local``, `ope.evaluation.engines.local`) and on a local Ray cluster started by
the run on every core (``ray``, `ope.evaluation.engines.ray`). Each case runs in a fresh Python process; its
wall time, the timing breakdown of `RunResult.timings` and its peak resident memory (VmHWM; for
Ray, the driver's — workers are separate processes) go to ``benchmark.extra_info`` and a summary
line. No test asserts a time; the only assertion is that
the peak stays under 4 GB.

Sizes come from ``LLM_OPE_BENCH_SCALE``: ``small`` (2·10⁴ rows, batches of 5,000) is the default
when benchmarks are disabled, so the default ``pytest`` runs each case once as a plain test;
``full`` (10⁶ rows) is the default with ``--benchmark-enable -n 0``; ``large`` (10⁷ rows) and ``huge`` (10⁸ rows)
are opt-in::

    LLM_OPE_BENCH_SCALE=full python -m pytest tests/benchmarks/test_bench_streaming.py --benchmark-enable -n 0 -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_streaming import HEURISTIC as POLICIES

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]  # whole streamed and Ray runs in subprocesses

MEMORY_LIMIT_MB = 4096.0
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Scale:
    name: str
    rows: int
    batch_rows: int
    partition_rows: int


SCALES = {
    "small": Scale("small", 20_000, 5_000, 10_000),
    "medium": Scale("medium", 100_000, 25_000, 50_000),
    "full": Scale("full", 1_000_000, 50_000, 250_000),
    "large": Scale("large", 10_000_000, 50_000, 250_000),
    "huge": Scale("huge", 100_000_000, 50_000, 250_000),
}

CONSTRAINED = """
[[policies]]
name = "routed"
kind = "constrained"
objective = "cost"
min_sla_hit = 0.45
exploration = 0.05
max_rows = 30000
"""
CASES = {
    "heuristic-ips": (["IPS", "SNIPS"], POLICIES),
    "dr-family-constrained": (["IPS", "SNIPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"], POLICIES + CONSTRAINED),
}
ENGINES = ["local", "ray"]


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> Scale:
    """Full size when the benchmark plugin is enabled, small otherwise, unless LLM_OPE_BENCH_SCALE says."""
    options = request.config.getoption
    disabled = options("benchmark_disable", default=True) and not options("benchmark_enable", default=False)
    name = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if disabled else "full")
    if name not in SCALES:
        raise pytest.UsageError(f"LLM_OPE_BENCH_SCALE must be one of {sorted(SCALES)}. Got {name!r}.")
    return SCALES[name]


@pytest.fixture(scope="module")
def simulated(scale: Scale, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The partitioned log of this scale (written once per session, not timed)."""
    from ope.simulate import write_partitioned

    return write_partitioned(tmp_path_factory.mktemp(f"stream-{scale.name}"), rows=scale.rows, days=7, seed=0,
                             partition_rows=scale.partition_rows)


def _config(folder: Path, logs: Path, catalog: Path, scale: Scale, case: str, engine: str) -> Path:
    estimators, policies = CASES[case]
    path = folder / f"{case}-{engine}.toml"
    path.write_text(f"""
[data]
logs = "{logs}"
catalog = "{catalog}"
streaming = true
engine = "{engine}"
batch_rows = {scale.batch_rows}
max_train_rows = 100000
[evaluation]
baseline = "direct_official"
estimators = {json.dumps(estimators)}
inference = "normal"
{policies}
[tracking]
enabled = false
""")
    return path


def worker(config: str, out: str) -> None:
    """Run in a fresh process: the streamed run and its outputs; print the measurements as JSON."""
    import time
    import warnings

    from ope.config import load_config
    from ope.evaluation.run import run_experiment
    from ope.report.outputs import write_outputs

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    result = run_experiment(load_config(config), show_progress=False)
    write_outputs(result, Path(out), "bench", overwrite=True)
    seconds = time.perf_counter() - t0
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
    assert result.streamed is not None
    if result.config.data.engine == "ray":
        import ray

        ray.shutdown()
    print(json.dumps({"rows": result.facts.rows, "seconds": seconds, "peak_rss_mb": peak,
                      "timings": {k: round(v, 2) for k, v in result.timings.items()}}))


def _measure(config: Path, out: Path) -> dict[str, Any]:
    code = f"from tests.benchmarks.test_bench_streaming import worker; worker({str(config)!r}, {str(out)!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(CASES))
def test_streamed_run(benchmark: Any, scale: Scale, simulated: tuple[Path, Path], tmp_path: Path, case: str, engine: str,
                      bench_results: dict[str, dict[str, Any]]) -> None:
    logs, catalog = simulated
    config = _config(tmp_path, logs, catalog, scale, case, engine)
    measured: dict[str, Any] = {}
    benchmark.pedantic(lambda: measured.update(_measure(config, tmp_path / "out")), rounds=1, iterations=1)
    measured["rows_per_second"] = measured["rows"] / measured["seconds"]
    benchmark.extra_info.update(measured)
    bench_results["cases"][f"stream {case} {engine} ({scale.name})"] = {"n": measured["rows"], "seconds": measured["seconds"],
                                                              "peak_rss_mb": measured["peak_rss_mb"],
                                                              "estimator_seconds": measured["timings"].get("evaluate")}
    bench_results["ratios"][f"stream {case} {engine} rows/s ({scale.name})"] = measured["rows_per_second"]
    assert measured["rows"] == scale.rows
    assert measured["peak_rss_mb"] < MEMORY_LIMIT_MB
