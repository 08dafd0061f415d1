"""A simulated canary log: a share of requests routed by a new policy, the rest by the baseline, propensities logged.

The contexts and outcomes come from the simulator's world (so the truth of both policies is exact);
the arm of each request is drawn from the mixture (1 − s)·π₀ + s·π, and that mixture's probability
of the drawn arm is its logged propensity, as a gateway running the canary would record it. Every
request is logged (no sampling weights), in arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.config import load_config
from ope.data.dataset import BanditDataset
from ope.evaluation.monitor import fitted_pair
from ope.simulate.generate import SimulatedLog, draw_logged_arms, log_frame, simulate
from ope.simulate.scenarios import scenario_spec

__all__ = ["CanaryLog", "simulate_canary", "write_canary"]


@dataclass(frozen=True, slots=True, eq=False)
class CanaryLog:
    """The canary's log and catalog, the world behind it, and the two policies' probabilities (n, K)."""

    sim: SimulatedLog
    policy: npt.NDArray[np.float64]
    baseline: npt.NDArray[np.float64]


def simulate_canary(config: str | Path, *, policy: str | None, share: float, rows: int, days: float, seed: int,
                    scenario: str = "default") -> CanaryLog:
    """Simulate a canary of ``policy`` (a policy of ``config``, fitted on its history log) against its baseline."""
    cfg = load_config(config)
    _, candidate, base = fitted_pair(cfg, policy)
    context_seed, draw_seed = np.random.default_rng(seed).spawn(2)
    world_sim = simulate(rows, days, int(context_seed.integers(2**31)), spec=scenario_spec(scenario))
    ds = BanditDataset.from_frames(world_sim.logs, world_sim.catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms)
    pi1, pi0 = candidate.action_probabilities(ds), base.action_probabilities(ds)
    mix = (1.0 - share) * pi0 + share * pi1
    arms = draw_logged_arms(mix, draw_seed)
    outcomes = world_sim.world.draw_outcomes(arms, draw_seed)
    logs = log_frame(world_sim.world, arms, outcomes, seed).drop("sample_weight").with_columns(
        pl.Series("propensity", mix[np.arange(rows), arms]))
    return CanaryLog(SimulatedLog(logs=logs, catalog=world_sim.catalog, world=world_sim.world), pi1, pi0)


def write_canary(config: str | Path, out_dir: str | Path, *, policy: str | None, share: float, rows: int, days: float,
                 seed: int, scenario: str = "default", logs_name: str = "canary.parquet") -> tuple[Path, Path]:
    """Simulate a canary and write its log and catalog as `write_scenario` does; returns the two paths."""
    canary = simulate_canary(config, policy=policy, share=share, rows=rows, days=days, seed=seed, scenario=scenario)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logs_path, catalog_path = out / logs_name, out / "catalog.csv"
    canary.sim.logs.write_parquet(logs_path, compression="zstd", statistics=True)
    canary.sim.catalog.write_csv(catalog_path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    return logs_path, catalog_path
