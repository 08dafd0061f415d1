"""The named simulator scenarios: valid worlds of the published kind, reproducible example logs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ope.data.dataset import BanditDataset
from ope.errors import ConfigError
from ope.simulate import simulate, write_simulation
from ope.simulate.scenarios import SCENARIOS, deepseek_v3_2_spec, qwen3_32b_spec, scenario_spec, write_scenario
from policies import DirectOfficial
from policies.constrained import ConstrainedRouter
from tests.conftest import ROOT as PROJECT_ROOT

SLA = 10_000.0
EXAMPLES = {"qwen3-32b": "qwen3_32b", "deepseek-v3.2": "deepseek_v3_2"}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_simulates(name: str) -> None:
    sim = simulate(500, days=1, seed=0, spec=scenario_spec(name))
    assert sim.logs.height == 500
    assert sim.world.logging_probabilities.shape == (500, len(sim.world.arms))


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"Unknown simulator scenario 'llama'; known scenarios: default, qwen3-32b"):
        scenario_spec("llama")


def test_qwen_market_is_of_the_published_kind() -> None:
    spec = qwen3_32b_spec()
    assert [m.name for m in spec.models] == ["qwen3-32b"] and spec.models[0].maker == "alibaba"
    third = [e for e in spec.endpoints if e.provider != "alibaba"]
    assert len(third) == 5
    assert min((e.price_in_per_mtok, e.price_out_per_mtok) for e in third) == (0.05, 0.10)
    assert max((e.price_in_per_mtok, e.price_out_per_mtok) for e in third) == (0.90, 0.90)
    assert {e.context_tokens for e in spec.endpoints} >= {32_768, 131_072}
    assert all(32_768 <= e.context_tokens <= 131_072 for e in spec.endpoints)


def test_deepseek_market_is_of_the_published_kind() -> None:
    spec = deepseek_v3_2_spec()
    official = next(e for e in spec.endpoints if e.provider == "deepseek")
    third = [e for e in spec.endpoints if e.provider != "deepseek"]
    assert official.tps < 10 and 1_500 <= official.ttft_ms <= 2_500
    assert all(60 <= e.tps <= 230 for e in third)

    def blended(e: object) -> float:
        return (3 * e.price_in_per_mtok + e.price_out_per_mtok) / 4  # type: ignore[attr-defined]

    ratios = [blended(e) / blended(official) for e in third]
    assert min(ratios) > 1.0 and 3.0 < max(ratios) < 6.0


def test_default_scenario_writes_the_same_bytes_as_write_simulation(tmp_path: Path) -> None:
    a = write_simulation(tmp_path / "a", rows=800, days=1, seed=3)
    b = write_scenario("default", tmp_path / "b", rows=800, days=1, seed=3)
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes()


@pytest.mark.parametrize(("name", "folder"), list(EXAMPLES.items()))
def test_example_logs_regenerate_bit_for_bit(tmp_path: Path, name: str, folder: str) -> None:
    """The command in logs/examples/README.md rebuilds the committed files: the same rows and columns, every value
    equal, floats to 1e-12 (numpy's exp and log round the last bit differently on CPUs with and without AVX-512,
    so the parquet bytes are the same only on the kind of CPU that wrote them)."""
    logs, catalog = write_scenario(name, tmp_path, rows=25_000, days=7, seed=20251001)
    committed = PROJECT_ROOT / "logs" / "examples" / folder
    assert_frame_equal(pl.read_parquet(logs), pl.read_parquet(committed / "requests.parquet"), check_exact=False,
                       rel_tol=1e-12, abs_tol=0.0)
    assert catalog.read_bytes() == (committed / "catalog.csv").read_bytes()


def _truth_of_routing(
    name: str, sla: float, budget: float | None = None, **settings: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Exact value of direct official access and of a constrained router fitted on the exact q.

    ``budget`` sets ``max_cost_usd`` to that multiple of direct official access's exact cost.
    """
    sim = simulate(6_000, days=7, seed=11, spec=scenario_spec(name))
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=sla)
    q = sim.world.expected_outcomes(sla)
    official = sim.world.true_value(DirectOfficial(fallback="cheapest").fit(ds).action_probabilities(ds), sla)
    if budget is not None:
        settings["max_cost_usd"] = budget * official["cost_usd"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        router = ConstrainedRouter(max_rows=None, **settings).fit(ds, q)  # type: ignore[arg-type]
    return official, sim.world.true_value(router.action_probabilities(ds, q), sla)


def test_qwen_routing_cuts_cost_by_the_published_order() -> None:
    """Published: -37.8 %. Cheapest routing within a point of official satisfaction and a better SLA."""
    official, routed = _truth_of_routing(
        "qwen3-32b", SLA, objective="cost", exploration=0.02, min_sla_hit=0.6, min_satisfaction=0.73
    )
    change = routed["cost_usd"] / official["cost_usd"] - 1
    assert -0.55 < change < -0.25, change
    assert routed["satisfaction"] >= official["satisfaction"] - 0.015


def test_deepseek_routing_raises_throughput_by_the_published_order() -> None:
    """Published: about +90 %. Fastest routing for at most 1 % more than direct official access costs."""
    official, routed = _truth_of_routing(
        "deepseek-v3.2", 30_000.0, budget=1.01, objective="throughput", exploration=0.005
    )
    change = routed["throughput_tps"] / official["throughput_tps"] - 1
    assert 0.5 < change < 2.5, change
    assert np.isclose(routed["cost_usd"], 1.01 * official["cost_usd"], rtol=1e-3)
