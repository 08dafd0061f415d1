"""What a gateway can express: exported policies (hand-computed), group averages, gateway files and the LiteLLM round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ope.cli import main
from ope.data.catalog import catalog_from_frame
from ope.data.dataset import BanditDataset
from ope.gateway.groups import group_average, weights_document
from ope.gateway.litellm import litellm_config
from ope.gateway.openrouter import choose_preferences, openrouter_document
from ope.importers.router_config import load_router_config
from ope.simulate import simulate
from ope.simulate.generate import draw_logged_arms, log_frame
from policies import PriceWeighted
from policies.base import PolicyError, policy_from_json, policy_to_json
from policies.exported import GroupWeights, ProviderPreferences, bucket_labels, group_keys
from tests.conftest import tiny_catalog, tiny_logs
from tests.unit.test_importers_propensity import _spend_records

# arms of the tiny catalog in K order: cheap/m1, fast/m1, maker/m1, maker/m2
CHEAP, FAST, MAKER, M2 = range(4)


@pytest.fixture
def tiny() -> BanditDataset:
    """16 hourly requests; row 2 (m1, code) has 9,000 input tokens, too many for cheap/m1 (8,000)."""
    logs = tiny_logs(16).with_columns(pl.when(pl.int_range(pl.len()) == 2).then(9000).otherwise(pl.col("input_tokens"))
                                      .alias("input_tokens"))
    return BanditDataset.from_frames(logs, tiny_catalog(), sla_latency_ms=10_000)


def test_group_weights_renormalise_over_the_eligible_arms(tiny: BanditDataset) -> None:
    policy = GroupWeights(weights={"m1|code": {"maker/m1": 1.0, "cheap/m1": 3.0}, "m1|*": {"fast/m1": 2.0, "maker/m1": 2.0}})
    pi = policy.action_probabilities(tiny)
    np.testing.assert_allclose(pi[0], [0.75, 0.0, 0.25, 0.0])      # m1 code: 3 : 1
    np.testing.assert_allclose(pi[1], [0.0, 0.5, 0.5, 0.0])        # m1 chat: no group, the model's default
    np.testing.assert_allclose(pi[2], [0.0, 0.0, 1.0, 0.0])        # cheap/m1 too short for 9,000 tokens
    np.testing.assert_allclose(pi[3], [0.0, 0.0, 0.0, 1.0])        # m2: no group at all, uniform over its one arm
    assert policy.n_fallback_ == 4                                 # rows 3, 7, 11, 15


def test_group_weights_by_input_length_bucket(tiny: BanditDataset) -> None:
    assert bucket_labels((1000, 4000)) == ["0-1000", "1000-4000", "4000+"]
    assert group_keys(tiny.requests.head(3), (1000,)).to_list() == ["m1|code|0-1000", "m1|chat|0-1000", "m1|code|1000+"]
    policy = GroupWeights(weights={"m1|code|0-1000": {"cheap/m1": 1.0}, "m1|code|1000+": {"maker/m1": 1.0}}, length_edges=(1000,))
    pi = policy.action_probabilities(tiny)
    np.testing.assert_allclose(pi[[0, 2]], [[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    np.testing.assert_allclose(pi[1], [1 / 3, 1 / 3, 1 / 3, 0.0])   # chat: fallback, uniform


def test_provider_preferences_order_and_price_balancing(tiny: BanditDataset) -> None:
    policy = ProviderPreferences(preferences={"m1|code": {"order": ["cheap/m1", "maker/m1"]},
                                              "m1|chat": {"balance": ["cheap/m1", "maker/m1"]}})
    pi = policy.action_probabilities(tiny)
    np.testing.assert_allclose(pi[0], [1.0, 0, 0, 0])               # the first eligible of the order
    np.testing.assert_allclose(pi[2], [0, 0, 1.0, 0])               # cheap/m1 cannot take 9,000 tokens: the next one
    # hour 1: blended prices cheap (3·0.2 + 0.4)/4 = 0.25, maker (3·1 + 2)/4 = 1.25 → weights 16 and 0.64
    np.testing.assert_allclose(pi[1], [16 / 16.64, 0, 0.64 / 16.64, 0])
    # hour 13: cheap's price halved at hour 12 → 0.125, weight 64
    np.testing.assert_allclose(pi[13], [64 / 64.64, 0, 0.64 / 64.64, 0])


@pytest.mark.parametrize(("make", "match"), [
    (lambda: GroupWeights(weights={"m1|code": {"cheap/m1": -1.0}}), "finite numbers >= 0"),
    (lambda: GroupWeights(length_edges=(4096, 1024)), "increasing positive"),
    (lambda: ProviderPreferences(preferences={"m1|code": {"sort": ["cheap/m1"]}}), "exactly one of 'order' or 'balance'"),
])
def test_bad_settings_are_refused(make: object, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        make()  # type: ignore[operator]


def test_unknown_arms_are_named(tiny: BanditDataset) -> None:
    with pytest.raises(PolicyError, match=r"not in the catalog: \['nowhere/m1'\]"):
        GroupWeights(weights={"m1|code": {"nowhere/m1": 1.0}}).action_probabilities(tiny)


def test_exported_policies_travel_as_json(tiny: BanditDataset) -> None:
    for policy in (GroupWeights(weights={"m1|*": {"fast/m1": 1.0}}, length_edges=(1000,)),
                   ProviderPreferences(preferences={"m1|*": {"balance": ["cheap/m1", "fast/m1"]}})):
        copy = policy_from_json(policy_to_json(policy))
        np.testing.assert_array_equal(copy.action_probabilities(tiny), policy.action_probabilities(tiny))


def test_group_average_is_the_sample_weighted_mean_probability() -> None:
    requests = pl.DataFrame({"request_id": ["r1", "r2", "r3", "r4"], "model": ["m1", "m1", "m1", "m2"],
                             "task": ["code", "code", "chat", "chat"], "input_tokens": [10, 10, 10, 10]})
    actions = pl.DataFrame({"request_id": ["r1", "r1", "r2", "r3", "r4"], "arm": ["a", "b", "a", "b", "c"],
                            "probability": [0.5, 0.5, 1.0, 1.0, 1.0]})
    weights = group_average(requests, np.array([1.0, 3.0, 1.0, 1.0]), actions)
    assert weights == {"m1|*": {"a": 0.7, "b": 0.3}, "m1|chat": {"b": 1.0}, "m1|code": {"a": 0.875, "b": 0.125},
                       "m2|*": {"c": 1.0}, "m2|chat": {"c": 1.0}}
    doc = weights_document(GroupWeights(weights=weights))
    assert doc["groups"][2] == {"model": "m1", "task": "code", "weights": {"a": 0.875, "b": 0.125}}


def test_openrouter_preferences_reproduce_price_balancing_exactly() -> None:
    sim = simulate(rows=600, days=1, seed=4)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000)
    target = PriceWeighted().action_probabilities(ds)
    prefs = choose_preferences(ds, target)
    assert all(next(iter(p)) == "balance" for p in prefs.values())
    policy = ProviderPreferences(preferences=prefs)
    np.testing.assert_allclose(policy.action_probabilities(ds), target, atol=1e-12)
    doc = openrouter_document(policy, ds.catalog.arms_frame, ds.catalog.prices)
    body = doc["groups"][0]["provider"]
    assert set(body) == {"ignore", "max_price", "allow_fallbacks"} and body["ignore"] == []


def test_a_litellm_export_imported_back_gives_the_same_propensities(tmp_path: Path) -> None:
    """Round trip: requests routed by the exported config, imported with it as --router-config, carry its probabilities."""
    sim = simulate(rows=800, days=1, seed=11)
    world = sim.world
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000)
    rng = np.random.default_rng(5)
    raw = rng.random((ds.n, world.n_arms)) * ds.eligible
    actions = pl.DataFrame({"request_id": np.repeat(ds.logs["request_id"].to_numpy(), world.n_arms),
                            "arm": np.tile(np.array(world.arms), ds.n), "probability": (raw / raw.sum(1, keepdims=True)).ravel()})
    policy = GroupWeights(weights=group_average(ds.logs, ds.sample_weight, actions.filter(pl.col("probability") > 0)))
    config = tmp_path / "litellm.yaml"
    config.write_text(yaml.safe_dump(litellm_config(policy, ds.catalog.arms_frame)))
    loaded = load_router_config(config)
    assert loaded.strategy == "simple-shuffle" and loaded.tag_filtering
    probs = policy.action_probabilities(ds)
    arms = draw_logged_arms(probs, np.random.default_rng(6))
    logs = log_frame(world, arms, world.draw_outcomes(arms, np.random.default_rng(7)), 11)
    spend, catalog, out = tmp_path / "spend.ndjson", tmp_path / "catalog.csv", tmp_path / "imported.parquet"
    spend.write_text("\n".join(json.dumps(r) for r in _spend_records(logs)) + "\n")
    sim.catalog.write_csv(catalog, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    assert main(["import", "litellm", str(spend), "--catalog", str(catalog), "--router-config", str(config), "--out", str(out)]) == 0
    imported = pl.read_parquet(out)
    index = catalog_from_frame(sim.catalog).arm_index(imported["arm"])
    np.testing.assert_allclose(imported["propensity"].to_numpy(), probs[np.arange(ds.n), index], rtol=1e-12)


def test_litellm_cannot_take_length_buckets() -> None:
    from ope.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot route on input length"):
        litellm_config(GroupWeights(length_edges=(1000,)), catalog_from_frame(tiny_catalog()).arms_frame)


def test_a_litellm_config_with_another_strategy_is_not_randomised(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "m1", "litellm_params": {"model": "cheap/m1", "weight": 1}},
        {"model_name": "m1", "litellm_params": {"model": "maker/m1", "weight": 3}}],
        "router_settings": {"routing_strategy": "latency-based-routing"}}))
    assert load_router_config(path).strategy == "unknown"      # not randomised: nothing reconstructed
