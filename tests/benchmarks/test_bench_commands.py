"""Wall time of the README's commands (`ope run`, `ope tune`, the constrained example), as a user runs them.

Each command runs in a fresh process (imports included, as a user pays them) from the project root, as
the README shows them, writing its report and a SQLite MLflow store in a temporary directory. With ``--benchmark-enable -n 0`` each runs 3 times on
the bundled sample and pytest-benchmark reports the median: the number the README quotes::

    python -m pytest tests/benchmarks/test_bench_commands.py --benchmark-enable -n 0 -s

Otherwise each runs once on a 3,000-row simulated log, untracked (it only checks that the measurement works).
Nothing asserts a wall-clock time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.benchmark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "ope run": ["run"],
    "ope tune": ["tune"],
    "ope run configs/constrained.toml": ["run", str(ROOT / "configs" / "constrained.toml")],
}


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from ope.simulate import write_simulation

    return write_simulation(tmp_path_factory.mktemp("sim"), rows=3000, days=2, seed=3)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_wall_time(command: str, benchmark: Any, tmp_path: Path, small_log: tuple[Path, Path],
                           bench_results: dict[str, dict[str, Any]]) -> None:
    full = not benchmark.disabled
    argv = [sys.executable, "-m", "ope.cli", *COMMANDS[command], "--out", str(tmp_path / "reports"), "--quiet",
            "--overwrite", "--run-name", "bench"]
    if full:
        argv += ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    else:  # tracking is tested elsewhere; a fresh SQLite store alone costs ~3 s a command
        argv += ["--logs", str(small_log[0]), "--catalog", str(small_log[1]), "--no-tracking"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def once() -> None:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

    benchmark.pedantic(once, rounds=3 if full else 1, iterations=1, warmup_rounds=0)
    stats = benchmark.stats.stats if benchmark.stats is not None else None
    if stats is not None:
        benchmark.extra_info["median_s"] = stats.median
        bench_results["cases"][command] = {"n": 60_000 if full else 3_000, "seconds": stats.median, "peak_rss_mb": float("nan")}
