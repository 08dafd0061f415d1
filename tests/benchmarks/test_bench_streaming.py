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

Sizes come from ``LLM_OPE_BENCH_SCALE``: ``small`` (10⁴ rows, batches of 2,500) is the default
when benchmarks are disabled, so the default ``pytest`` runs the local cases that take no new path once as plain tests;
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
    "small": Scale("small", 10_000, 2_500, 5_000),
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
DR_FAMILY = ["IPS", "SNIPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"]
COMPILED = '[predictors]\ncompiled = "lleaves"\n'
NO_ACTIONS = 'actions = "none"\n'


@dataclass(frozen=True)
class Case:
    """A streamed run: its estimators and policies, and the new paths it takes (compiled trees, no action files)."""

    estimators: list[str]
    policies: str
    predictors: str = ""
    output: str = ""

    @property
    def takes_new_paths(self) -> bool:
        """A case the code before issue 19 cannot run (its config keys did not exist)."""
        return bool(self.predictors or self.output)


CASES = {
    "heuristic-ips": Case(["IPS", "SNIPS"], POLICIES),
    "heuristic-ips-no-actions": Case(["IPS", "SNIPS"], POLICIES, output=NO_ACTIONS),
    "dr-family-constrained": Case(DR_FAMILY, POLICIES + CONSTRAINED),
    "dr-family-constrained-compiled": Case(DR_FAMILY, POLICIES + CONSTRAINED, predictors=COMPILED),
    "dr-family-constrained-compiled-no-actions": Case(DR_FAMILY, POLICIES + CONSTRAINED, predictors=COMPILED,
                                                      output=NO_ACTIONS),
}
ENGINES = ["local", "ray"]
#: a checkout of an earlier commit (``git worktree add ../before b29edfa``): each case it can run is also run
#: there, in turn with this checkout, and the ratio of the two wall times is reported
BASELINE = os.environ.get("LLM_OPE_BENCH_BASELINE")


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> Scale:
    """Full size when the benchmark plugin is enabled, small otherwise, unless LLM_OPE_BENCH_SCALE says."""
    enabled = request.config.getoption("benchmark_enable", default=False)
    name = os.environ.get("LLM_OPE_BENCH_SCALE") or ("full" if enabled else "small")
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
    spec = CASES[case]
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
estimators = {json.dumps(spec.estimators)}
inference = "normal"
{spec.policies}
{spec.predictors}
[tracking]
enabled = false
[output]
{spec.output}
""")
    return path


def worker(config: str, out: str) -> None:
    """Run in a fresh process: the streamed run and its outputs; print the measurements as JSON."""
    import time
    import warnings

    from ope.config import load_config

    try:
        from ope.evaluation.run import run_experiment
        from ope.report.outputs import write_outputs
    except ImportError:  # a baseline checkout from before the layout of DESIGN §3
        from ope.runner import run_experiment  # type: ignore[no-redef]

        from ope.report import write_outputs  # type: ignore[no-redef]

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    result = run_experiment(load_config(config), show_progress=False)
    write_outputs(result, Path(out), "bench", overwrite=True)
    seconds = time.perf_counter() - t0
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
    facts = getattr(result, "facts", None) or result.stream  # the baseline checkout keeps them in ``stream``
    if result.config.data.engine == "ray":
        import ray

        ray.shutdown()
    print(json.dumps({"rows": facts.rows, "seconds": seconds, "peak_rss_mb": peak,
                      "timings": {k: round(v, 2) for k, v in result.timings.items()}}))


def _measure(config: Path, out: Path, checkout: Path = ROOT) -> dict[str, Any]:
    """One run in a fresh process of ``checkout``'s code (this one, or the baseline: the worker's source is passed in)."""
    import inspect

    code = f"import json, os\nfrom pathlib import Path\n{inspect.getsource(worker)}\nworker({str(config)!r}, {str(out)!r})"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measuring(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_enable", False)) or os.environ.get("LLM_OPE_BENCH_SCALE", "small") != "small"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every case on both engines when measuring; the default run (small, once each) runs the two cases that take
    no new path on the local engine: compiled trees, skipped action files and the Ray engine have their own tests
    (tests/unit/test_compiled.py, tests/integration/test_end_to_end.py, tests/integration/test_engine_ray.py), and
    compiling costs ~20 s and starting Ray ~20 s at any size."""
    if metafunc.function.__name__ != "test_streamed_run":
        return
    measuring = _measuring(metafunc.config)
    pairs = [(case, engine) for case, spec in CASES.items() for engine in ENGINES
             if (measuring or (not spec.takes_new_paths and engine == "local")) and not (engine == "ray" and spec.output)]
    metafunc.parametrize(("case", "engine"), pairs, ids=[f"{c}-{e}" for c, e in pairs])


def test_streamed_run(benchmark: Any, scale: Scale, simulated: tuple[Path, Path], tmp_path: Path, case: str, engine: str,
                      bench_results: dict[str, dict[str, Any]]) -> None:
    logs, catalog = simulated
    config = _config(tmp_path, logs, catalog, scale, case, engine)
    measured: dict[str, Any] = {}
    if BASELINE and not CASES[case].takes_new_paths:
        before = _measure(config, tmp_path / "out-before", Path(BASELINE))
        bench_results["cases"][f"stream {case} {engine} ({scale.name}) before"] = {
            "n": before["rows"], "seconds": before["seconds"], "peak_rss_mb": before["peak_rss_mb"],
            "estimator_seconds": before["timings"].get("evaluate")}
    benchmark.pedantic(lambda: measured.update(_measure(config, tmp_path / "out")), rounds=1, iterations=1)
    if BASELINE and not CASES[case].takes_new_paths:
        bench_results["ratios"][f"stream {case} {engine} wall before / now ({scale.name})"] = before["seconds"] / measured["seconds"]
    measured["rows_per_second"] = measured["rows"] / measured["seconds"]
    benchmark.extra_info.update(measured)
    bench_results["cases"][f"stream {case} {engine} ({scale.name})"] = {"n": measured["rows"], "seconds": measured["seconds"],
                                                              "peak_rss_mb": measured["peak_rss_mb"],
                                                              "estimator_seconds": measured["timings"].get("evaluate")}
    bench_results["ratios"][f"stream {case} {engine} rows/s ({scale.name})"] = measured["rows_per_second"]
    assert measured["rows"] == scale.rows
    assert measured["peak_rss_mb"] < MEMORY_LIMIT_MB
