"""Tracking never costs the report: an unreachable server is found in seconds, and what MLflow gets is short."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from ope.cli import main
from ope.report.tracking import check_server, headline_metrics, run_description
from tests.conftest import OFFICIAL_AND_CHEAPEST

CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
estimators = ["IPS", "SNIPS"]
""" + OFFICIAL_AND_CHEAPEST + """[tracking]
experiment = "unreachable"
"""


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_server_says_why_and_returns_quickly(silent_port: int) -> None:
    start = time.monotonic()
    assert "does not answer (timed out" in check_server(f"http://127.0.0.1:{silent_port}", timeout=1.0)
    assert "Connection refused" in check_server(f"http://127.0.0.1:{_closed_port()}", timeout=1.0)
    assert time.monotonic() - start < 10
    assert check_server("sqlite:///mlflow.db") is None and check_server(None) is None


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_unreachable_server_fails_fast_and_keeps_the_report(server: str, silent_port: int, simulated: tuple[Path, Path],
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=simulated[0], catalog=simulated[1]))
    uri = f"http://127.0.0.1:{_closed_port() if server == 'refused' else silent_port}"
    start = time.monotonic()
    code = main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "x", "--quiet", "--tracking-uri", uri])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    report = tmp_path / "r" / "x" / "report.html"
    assert code == 0 and report.exists()
    assert f"tracking failed: the MLflow server {uri} does not answer" in err
    assert f"report written to {report}" in err
    assert elapsed < 60       # generous: the run itself takes a few seconds; MLflow's own retries took minutes


def test_headline_metrics_are_one_estimator_value_and_change_sorted_by_policy() -> None:
    est = pl.DataFrame({
        "policy": ["a", "a", "a", "b", "b", "b/x"], "metric": ["cost_usd", "cost_usd", "cost_usd", "cost_usd", "success", "success"],
        "estimator": ["DR", "DR", "IPS", "DR", "DR", "DR"], "kind": ["value", "relative", "value", "difference", "value", "value"],
        "value": [1.0, -12.5, 2.0, 0.3, float("nan"), 0.9],
    })
    assert headline_metrics(est, "DR") == {"a/cost_usd": 1.0, "a/cost_usd.change_pct": -12.5, "b_x/success": 0.9}


def test_run_description_lists_significant_changes_only() -> None:
    cell = {"value": -30.0, "ci_low": -35.0, "ci_high": -25.0}
    info = {"primary_estimator": "DR", "baseline": "base", "policies": {
        "base": {"relative": {}},
        "cheap": {"relative": {"cost_usd": cell, "success": {"value": 1.0, "ci_low": -2.0, "ci_high": 3.0}}},
        "same": {"relative": {"cost_usd": {"value": None, "ci_low": None, "ci_high": None}}},
    }}
    assert run_description(info) == "DR vs base — cheap: cost_usd -30.0%; same: no significant change"


def test_run_page_opens_the_machine_learning_view() -> None:
    from ope.report.tracking import run_page

    assert run_page("http://mlflow.internal:5000/", "7", "abc") == \
        "http://mlflow.internal:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    assert run_page("sqlite:///mlflow.db", "1", "r").startswith("http://127.0.0.1:5000/#/experiments/1/runs/r?")
