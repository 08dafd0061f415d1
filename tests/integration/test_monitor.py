"""`ope monitor` end to end on simulated canaries, and (slow) its error rate and power against the simulator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from estimators.canary import CanaryCS
from estimators.onesided import OneSidedState
from ope.cli import main
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import scenario_spec, simulate
from ope.simulate.canary import write_canary
from ope.simulate.generate import draw_logged_arms
from policies.baselines import Cheapest, DirectOfficial

ROOT = Path(__file__).resolve().parents[2]
COST, SLA = METRICS.index("cost_usd"), METRICS.index("sla_hit")


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4,000-request canary of cheapest routing against direct official access (Qwen3-32B market), and its config."""
    out = tmp_path_factory.mktemp("canary")
    text = (ROOT / "configs/examples/qwen3_canary.toml").read_text().replace('"logs/', f'"{ROOT}/logs/')
    config = out / "canary.toml"
    config.write_text(text + f'\n[output]\ndir = "{out}/reports"\n')
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


def _hourly(cs: CanaryCS, hours: np.ndarray, w1: np.ndarray, w0: np.ndarray, r: np.ndarray) -> tuple[int | None, int | None]:
    """Peek at the end of every hour, carrying the state through JSON; the first row at which the cost difference's
    sequence excludes 0, and any row with any false decision on SLA or cost (two-sided)."""
    state, first_cost, first_any = cs.start(), None, None
    for h in np.unique(hours):
        rows = hours == h
        state, b = cs.update(OneSidedState.from_dict(json.loads(json.dumps(state.to_dict()))),
                             weight=w1[rows], baseline_weight=w0[rows], outcomes=r[rows])
        (clo, chi), (slo, shi) = (b.difference[0][-1, 0], b.difference[1][-1, 0]), (b.difference[0][-1, 1], b.difference[1][-1, 1])
        if first_cost is None and chi < 0:
            first_cost = state.t
        if first_any is None and (chi < 0 or clo > 0 or shi < 0 or slo > 0):
            first_any = state.t
    return first_cost, first_any


def _canary_draw(world, pi1: np.ndarray, pi0: np.ndarray, share: float, rng: np.random.Generator):
    mix = (1 - share) * pi0 + share * pi1
    arms = draw_logged_arms(mix, rng)
    out = world.draw_outcomes(arms, rng)
    rows = np.arange(len(arms))
    sla = ((out.status_names == "ok") & (out.latency_ms <= 10_000)).astype(float)
    return pi1[rows, arms] / mix[rows, arms], pi0[rows, arms] / mix[rows, arms], np.column_stack([out.cost_usd, sla])


@pytest.mark.slow
def test_equal_policies_decide_falsely_at_most_alpha_of_the_time() -> None:
    """200 seeds, hourly peeks: uniform routing against a policy that routes each request to one eligible arm drawn
    uniformly at random (the same value on every metric, different rows): any decision is false."""
    sim = simulate(20_000, 2, 0, spec=scenario_spec("qwen3-32b"))
    world, hours = sim.world, sim.logs["ts"].dt.epoch("s").to_numpy() // 3600
    pi0 = world.eligible / world.eligible.sum(axis=1, keepdims=True)
    cs = CanaryCS(alpha=0.025, share=0.05, metric_high=(0.1, 1.0))
    false = 0
    for seed in range(200):
        rng = np.random.default_rng(1_000 + seed)
        pick = draw_logged_arms(pi0, rng)
        pi1 = np.zeros_like(pi0)
        pi1[np.arange(world.n), pick] = 1.0
        w1, w0, r = _canary_draw(world, pi1, pi0, 0.05, rng)
        false += _hourly(cs, hours, w1, w0, np.minimum(r, [0.1, 1.0]))[1] is not None
    print(f"false decisions: {false} of 200 seeds")
    assert false / 200 <= 0.05


@pytest.mark.slow
def test_a_thirty_percent_cost_cut_is_detected() -> None:
    """The Qwen3-32B market, canary at 5 %: 0.55 · official + 0.45 · cheapest costs 29 % less than official access."""
    sim = simulate(60_000, 7, 0, spec=scenario_spec("qwen3-32b"))
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000)
    pi0 = DirectOfficial(fallback="cheapest").fit(ds).action_probabilities(ds)
    pi1 = 0.55 * pi0 + 0.45 * Cheapest().fit(ds).action_probabilities(ds)
    truth = sim.world.true_value(pi1, 10_000)["cost_usd"] / sim.world.true_value(pi0, 10_000)["cost_usd"] - 1
    assert -0.31 < truth < -0.27
    hours = sim.logs["ts"].dt.epoch("s").to_numpy() // 3600
    cs = CanaryCS(alpha=0.025, share=0.05, metric_high=(0.1, 1.0))
    found = []
    for seed in range(20):
        w1, w0, r = _canary_draw(sim.world, pi1, pi0, 0.05, np.random.default_rng(seed))
        assert r[:, 0].max() <= 0.1
        found.append(_hourly(cs, hours, w1, w0, r)[0])
    assert all(f is not None and f <= 50_000 for f in found), found
    print(f"cost cut detected after {np.median(found):,.0f} requests (median of 20; max {max(found):,})")
