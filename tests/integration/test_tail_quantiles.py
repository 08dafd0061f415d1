"""Off-policy quantiles against the simulator's exact truth (reduced), and the committed coverage table's replications.

The full check (4 worlds × 50 replications at n = 20,000) is `docs/experiments/tail_quantiles.py`, which writes
`docs/experiments/tail_quantiles.md`; here the exact distributions are checked against a log, a reduced coverage
check runs at n = 2,000, and the first two replications of the committed file are recomputed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ope.data.dataset import BanditDataset
from ope.simulate import simulate
from ope.simulate.distribution import policy_cdf
from tests.conftest import experiment_script

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def script():
    return experiment_script("tail_quantiles")


@pytest.fixture(scope="module")
def policies(script):
    return script.targets()


@pytest.fixture(scope="module")
def logged() -> tuple[object, BanditDataset]:
    sim = simulate(8_000, days=2, seed=3)
    return sim, BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000.0)


@pytest.mark.parametrize("metric", ["ttft_ms", "latency_ms", "cost_usd", "throughput_tps"])
def test_exact_cdf_of_the_logging_policy_matches_its_log(metric: str, logged: tuple[object, BanditDataset]) -> None:
    """F(t) of the logger from the world's closed forms against the sample-weighted share of logged rows ≤ t (4 SE)."""
    sim, ds = logged
    y, s = ds.outcomes[:, ds.metrics.index(metric)], ds.sample_weight
    thresholds = np.quantile(y, [0.5, 0.9, 0.97])
    exact = policy_cdf(sim.world, sim.world.logging_probabilities, metric, thresholds)
    ind = y[:, None] <= thresholds[None, :]
    share = s @ ind / s.sum()
    se = np.sqrt(((s[:, None] * (ind - share)) ** 2).sum(axis=0)) / s.sum()
    assert np.all(np.abs(share - exact) <= 4 * se), (share, exact, se)


def test_snips_quantile_intervals_cover_the_exact_truth(script, policies) -> None:
    """12 logs of 2,000 requests from one world: SNIPS's 95 % intervals of p50 and p95 (TTFT, cost; each target and the
    paired difference) cover the exact quantile in at least 10 of 12 (fixed seeds: the same draws every run)."""
    metrics = ("ttft_ms", "cost_usd")
    case = script.world_case(7, 2_000, policies, truth=metrics)
    rows = [r for rep in range(12) for r in script.replicate(case, 7, rep, metrics)
            if r["estimator"] == "SNIPS" and r["quantile"] in (0.5, 0.95)]
    groups: dict[tuple[str, str, float], list[bool]] = {}
    for r in rows:
        groups.setdefault((r["policy"], r["metric"], r["quantile"]), []).append(r["ci_low"] <= r["truth"] <= r["ci_high"])
    assert len(groups) == 12
    low = {key: sum(hits) for key, hits in groups.items() if sum(hits) < 10}
    assert not low, low


def _committed() -> list[tuple[str, ...]]:
    text = (ROOT / "docs" / "experiments" / "tail_quantiles.md").read_text()
    section = text.split("## Replications, as written", 1)[1]
    return [tuple(c.strip() for c in line.strip("|").split("|")) for line in section.splitlines() if re.match(r"\| \d", line)]


def test_the_committed_replications_are_what_the_script_writes(script, policies) -> None:
    committed = _committed()
    assert len(committed) == 8
    case = script.world_case(1, script.N, policies, truth=())
    found = {(str(r["world"]), str(r["rep"]), r["policy"], r["metric"], str(r["quantile"])): r
             for rep in (0, 1) for r in script.replicate(case, 1, rep, ("ttft_ms", "latency_ms")) if r["estimator"] == "SNIPS"}
    for world, rep, policy, metric, quantile, value, low, high in committed:
        r = found[(world, rep, policy, metric, quantile)]
        assert [f"{r[k]:.6g}" for k in ("value", "ci_low", "ci_high")] == [value, low, high]


def test_the_readme_quotes_the_committed_coverage() -> None:
    """The README's coverage ranges (SNIPS and DR, TTFT and latency, p50 and p95) are the committed table's."""
    text = (ROOT / "docs" / "experiments" / "tail_quantiles.md").read_text()
    cells: dict[str, list[float]] = {"target": [], "difference": [], "DR": []}
    widths: dict[str, list[float]] = {}
    for line in text.splitlines():
        parts = [c.strip() for c in line.strip("|").split("|")]
        if len(parts) == 8 and parts[0] in ("ttft_ms", "latency_ms") and parts[1] in ("SNIPS", "DR"):
            kind = "DR" if parts[1] == "DR" else "difference" if parts[2] == "difference" else "target"
            cells[kind] += [float(parts[3]), float(parts[5])]   # p50 and p95 columns
            if parts[2] != "difference":                      # "p50 % / p95 %" half-widths
                widths.setdefault(parts[1], []).append(float(parts[7].split("/")[1].strip(" %")))
    readme = (ROOT / "README.md").read_text()
    readme = " ".join(readme.split())
    for values in cells.values():
        assert len(values) in (4, 8, 12) and f"{min(values):.1f}–{max(values):.1f} %" in readme
    dr, snips = sorted(widths["DR"]), sorted(widths["SNIPS"])
    assert f"p95 half-widths of {dr[0]:.1f}–{dr[-1]:.1f} % (SNIPS {snips[0]:.1f}–{snips[-1]:.1f} %)" in readme
    counts = [re.search(rf"{est}: (\d+) of (\d+) p50/p95 cells outside 93–97 %", text) for est in ("IPS", "SNIPS")]
    assert all(counts), "the page says how many p50/p95 cells fall outside 93–97 %"
    total, out = sum(int(c.group(2)) for c in counts), sum(int(c.group(1)) for c in counts)
    assert f"of the {total} p50/p95 cells of IPS and SNIPS over all four metrics, {total - out} lie within 93–97 %" in readme
