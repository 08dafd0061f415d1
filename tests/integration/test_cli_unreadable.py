"""Every command meets an unreadable log with exit 2 and one line, never a traceback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ope.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "logs"


def _garbage(tmp: Path) -> Path:
    (path := tmp / "garbage.parquet").write_bytes(bytes(range(256)) * 12)
    return path


def _empty(tmp: Path) -> Path:
    (path := tmp / "empty.parquet").write_bytes(b"")
    return path


def _truncated(tmp: Path) -> Path:
    (path := tmp / "truncated.parquet").write_bytes((SAMPLE / "sample_requests.parquet").read_bytes()[:20_000])
    return path


def _wrong_extension(tmp: Path) -> Path:
    shutil.copy(SAMPLE / "sample_requests.parquet", path := tmp / "requests.csv")
    return path


def _directory_without_parquet(tmp: Path) -> Path:
    (path := tmp / "lake").mkdir()
    (path / "README.txt").write_text("no parquet here\n")
    return path


CASES: dict[str, Callable[[Path], Path]] = {"garbage": _garbage, "empty": _empty, "truncated": _truncated,
                                           "wrong extension": _wrong_extension, "directory": _directory_without_parquet}
CATALOG = str(SAMPLE / "catalog.csv")
COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "run": lambda logs, out: ["run", "--logs", str(logs), "--out", str(out), "--no-tracking", "--quiet"],
    "run --streaming": lambda logs, out: ["run", "--logs", str(logs), "--out", str(out), "--no-tracking", "--quiet", "--streaming"],
    "tune": lambda logs, out: ["tune", "--logs", str(logs), "--out", str(out), "--no-tracking", "--quiet"],
    "validate": lambda logs, out: ["validate", str(logs), "--catalog", CATALOG],
    "validate --json": lambda logs, out: ["validate", str(logs), "--catalog", CATALOG, "--json"],
    "catalog of run": lambda bad, out: ["run", "--catalog", str(bad), "--out", str(out), "--no-tracking", "--quiet"],
    "import litellm": lambda logs, out: ["import", "litellm", str(logs), "--out", str(out / "x.parquet"), "--catalog", CATALOG],
    "import openrouter": lambda logs, out: ["import", "openrouter", str(logs), "--out", str(out / "x.parquet"), "--catalog", CATALOG],
    "import otel": lambda logs, out: ["import", "otel", str(logs), "--out", str(out / "x.parquet"), "--catalog", CATALOG],
    "import burstgpt": lambda logs, out: ["import", "burstgpt", str(logs), "--out", str(out / "x.parquet"),
                                          "--catalog", CATALOG],
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_unreadable_input_exits_2_with_one_line(command: str, case: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = CASES[case](tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(COMMANDS[command](bad, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err and len(err) < 400
    assert bad.name in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == before     # nothing written beside the input
    assert not list((tmp_path / "out").rglob("*.parquet")) if (tmp_path / "out").exists() else True
