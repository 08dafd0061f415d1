"""Progress bars for a person at a terminal (one per stage), and none in a pipe or with --quiet."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
estimators = ["SNIPS", "DR"]
[predictors]
folds = 2
n_estimators = 10
[[policies]]
name = "direct_official"
kind = "direct_official"
fallback = "uniform"
[[policies]]
name = "cheapest"
kind = "cheapest"
epsilon = 0.1
[tracking]
enabled = false
"""
STAGES = ("loading and validating logs", "fitting outcome models", "fitting policies", "evaluating policies",
          "writing the report")


def _argv(tmp: Path, simulated: tuple[Path, Path], *extra: str) -> list[str]:
    config = tmp / "c.toml"
    config.write_text(CONFIG.format(logs=simulated[0], catalog=simulated[1]))
    return [sys.executable, "-m", "ope.cli", "run", str(config), "--out", str(tmp / "r"), "--overwrite", "--run-name", "p", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "COLUMNS": "160"}


def _in_terminal(argv: list[str], stdout: Path | None = None) -> tuple[int, str]:
    """Run under a pseudo-terminal of 160 × 40 (stdout, unless sent to the file ``stdout``, and stderr); return the exit
    code and what the terminal showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    with open(stdout or os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave if stdout is None else sink, stderr=slave, env=_env(), cwd=ROOT,
                                close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:       # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_a_bar_per_stage_in_a_terminal(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    code, out = _in_terminal(_argv(tmp_path, simulated))
    assert code == 0, out[-2000:]
    for stage in STAGES:
        assert f"{stage}:" in out, f"no bar for {stage!r}"
    assert "%|" in out and "report:" in out


def test_no_bar_with_quiet_in_a_terminal(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    code, out = _in_terminal(_argv(tmp_path, simulated, "--quiet"))
    assert code == 0, out[-2000:]
    assert "report:" in out
    assert not any(stage in out for stage in STAGES) and "%|" not in out


def test_no_bar_when_stdout_is_not_a_terminal(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    """``ope run > out.txt`` at a terminal: the bars would land on the terminal (stderr), but stdout decides."""
    code, err = _in_terminal(_argv(tmp_path, simulated), stdout=tmp_path / "out.txt")
    out = (tmp_path / "out.txt").read_text()
    assert code == 0, err
    assert "report:" in out
    assert not any(stage in out + err for stage in STAGES) and "%|" not in out + err


def test_no_bar_in_a_pipe(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    proc = subprocess.run(_argv(tmp_path, simulated), capture_output=True, env=_env(), cwd=ROOT, timeout=300, check=False)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "report:" in out
    assert not any(stage in out + err for stage in STAGES) and "%|" not in out + err
