"""The packaged defaults: a built wheel, installed in a fresh virtual environment, runs the quickstart from any directory."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel, makes a venv and runs the quickstart (about 30 s)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_a_built_wheel_runs_the_quickstart_from_a_temporary_directory(tmp_path: Path) -> None:
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path / "dist")], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("llm_ope-*.whl"))
    env = tmp_path / "fresh"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    packages = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip())
    # the dependencies come from this environment's site-packages (no .pth files of its own run: llm-ope's editable
    # install stays out); llm-ope itself only from the wheel
    (packages / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    where = _run([str(python), "-c", "import ope; print(ope.__file__)"], cwd=tmp_path).stdout.strip()
    assert where.startswith(str(packages)), where
    work = tmp_path / "anywhere"
    work.mkdir()
    ope = str(env / "bin" / "ope")
    assert _run([ope, "--version"], cwd=work).stdout.strip() == "ope 0.1.0"
    _run([ope, "run", "--no-tracking", "--quiet", "--run-name", "first"], cwd=work)
    assert (work / "reports" / "first" / "report.html").stat().st_size > 10_000
    assert (work / "reports" / "first" / "estimates.csv").read_text().count("\n") > 100
