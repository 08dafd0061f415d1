"""`ope monitor` end to end on simulated canaries (its error rate and power over seeds: docs/experiments/canary_sequences.py
and tests/integration/test_canary_sequences.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.cli import main
from ope.simulate.canary import write_canary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4,000-request canary of cheapest routing against direct official access (Qwen3-32B market), and its config."""
    out = tmp_path_factory.mktemp("canary")
    text = (ROOT / "configs/examples/qwen3_canary.toml").read_text().replace('"logs/', f'"{ROOT}/logs/')
    config = out / "canary.toml"
    config.write_text(text + f'\n[output]\ndir = "{out}/reports"\n\n[predictors]\nfolds = 2\nn_estimators = 10\n')
    logs, _ = write_canary(config, out, policy="cheapest", share=0.05, rows=4_000, days=1, seed=7, scenario="qwen3-32b")
    return config, logs


def _monitor(config: Path, logs: Path, state: Path, *extra: str) -> int:
    return main(["monitor", str(config), "--logs", str(logs), "--state", str(state), "--sla-margin", "0.5", *extra])


def test_two_calls_continue_where_the_first_stopped(canary: tuple[Path, Path], tmp_path: Path) -> None:
    config, logs = canary
    frame = pl.read_parquet(logs)
    first, rest = tmp_path / "first.parquet", tmp_path / "all.parquet"
    frame.head(1_500).write_parquet(first)
    frame.write_parquet(rest)
    assert _monitor(config, logs, tmp_path / "once.json") == 0
    assert _monitor(config, first, tmp_path / "twice.json") == 0
    assert _monitor(config, rest, tmp_path / "twice.json") == 0
    once, twice = (json.loads((tmp_path / f).read_text()) for f in ("once.json", "twice.json"))
    assert once["sequences"]["t"] == twice["sequences"]["t"]
    for key in ("lo_beta_x", "hi_beta_x", "lo_pen", "hi_pen"):
        np.testing.assert_allclose(once["sequences"][key], twice["sequences"][key], rtol=1e-12)
    assert once["verdict"] == twice["verdict"] and once["last_ts"] == twice["last_ts"]


def test_a_log_going_back_in_time_is_refused(canary: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config, logs = canary
    shuffled = tmp_path / "shuffled.parquet"
    pl.read_parquet(logs).reverse().write_parquet(shuffled)
    assert _monitor(config, shuffled, tmp_path / "s.json") == 2
    assert "goes back in time" in capsys.readouterr().err
    part = tmp_path / "part.parquet"
    pl.read_parquet(logs).head(2_000).write_parquet(part)
    assert _monitor(config, part, tmp_path / "t.json") == 0
    assert _monitor(config, logs, tmp_path / "t.json", "--since", "2025-10-01T00:00:00Z") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--since 2025-10-01T00:00:00+00:00 goes back in time" in err[0]


def test_a_state_of_other_settings_is_refused(canary: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config, logs = canary
    assert _monitor(config, logs, tmp_path / "s.json") == 0
    assert _monitor(config, logs, tmp_path / "s.json", "--share", "0.1") == 2
    assert "was written for other settings" in capsys.readouterr().err
    old = json.loads((tmp_path / "s.json").read_text())
    del old["format"]  # a state of the two-sided sequences this version replaced
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert _monitor(config, logs, tmp_path / "old.json") == 2
    assert "written by another version of ope monitor (format None" in capsys.readouterr().err


def test_doubly_robust_q_hat_comes_from_models_fitted_once_on_the_history(canary: tuple[Path, Path], tmp_path: Path) -> None:
    """Both kinds of terms give a valid state over the same rows; the DR models are fitted on the history log once and
    kept under <out>/monitor, keyed by the history's bytes, and never refitted for a later call or another state."""
    config, logs = canary
    assert _monitor(config, logs, tmp_path / "dr.json") == 0
    models = sorted((config.parent / "reports" / "monitor").glob("models-*.json"))
    assert len(models) == 1
    stamp = models[0].stat().st_mtime_ns
    assert _monitor(config, logs, tmp_path / "dr2.json") == 0 and models[0].stat().st_mtime_ns == stamp
    assert _monitor(config, logs, tmp_path / "ips.json", "--terms", "ips") == 0
    dr, ips = (json.loads((tmp_path / f).read_text()) for f in ("dr.json", "ips.json"))
    assert dr["settings"]["terms"] == "dr" and ips["settings"]["terms"] == "ips"
    assert dr["sequences"]["t"] == ips["sequences"]["t"] and dr["sequences"]["sum_x"] != ips["sequences"]["sum_x"]

