"""The contract every policy kind keeps (`policies.base.Policy`), one suite over the registry's kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ope.config import PolicyConfig
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError, PolicyError
from ope.evaluation.registry import KINDS, build_policy, policy_class
from ope.models.predictors import PredictorConfig, fit_outcome_models
from policies import Pairs, Policy
from policies.base import policy_from_json, policy_to_json, settings_of

#: settings each kind is built with (the rest are its defaults)
SETTINGS: dict[str, dict[str, Any]] = {
    "constrained": {"objective": "cost", "min_sla_hit": 0.3, "exploration": 0.05},
    "mess_plus": {"min_satisfaction": 0.6},
    "stage_route": {"max_cost_usd": 0.01},
    "direct_official": {"fallback": "cheapest"},
}


@pytest.fixture(scope="module")
def fitted_log(simulated: tuple[Path, Path]) -> tuple[BanditDataset, np.ndarray]:
    logs, catalog = simulated
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    return ds, fit_outcome_models(ds, PredictorConfig(folds=2, n_estimators=10, num_leaves=7)).q_hat


def _policy(kind: str) -> Policy:
    return build_policy(PolicyConfig(name=f"the-{kind}", kind=kind, params=SETTINGS.get(kind, {})))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_capabilities_are_declared_class_attributes(kind: str) -> None:
    cls = policy_class(kind)
    for flag in ("needs_q_hat", "learns", "online", "pairwise"):
        assert isinstance(getattr(cls, flag), bool), flag
    assert not cls.online or cls.learns  # an online router learns


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_probabilities_are_a_distribution_over_the_eligible_arms(kind: str, fitted_log: tuple[BanditDataset, np.ndarray]) -> None:
    ds, q_hat = fitted_log
    policy = _policy(kind)
    assert policy.fit(ds, q_hat) is policy
    pi = policy.action_probabilities(ds, q_hat)
    assert pi.shape == (ds.n, ds.catalog.n_arms) and (pi >= 0).all()
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=1e-9)
    assert (pi[~ds.eligible] == 0).all()
    pairs = Pairs.of(ds.eligible)
    np.testing.assert_allclose(policy.pair_probabilities(ds, pairs, q_hat), pi[pairs.rows, pairs.arms], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_fitted_policy_travels_as_json_and_routes_identically(kind: str, fitted_log: tuple[BanditDataset, np.ndarray]) -> None:
    ds, q_hat = fitted_log
    policy = _policy(kind).fit(ds, q_hat)
    copy = policy_from_json(policy_to_json(policy))
    assert type(copy) is type(policy) and copy.name == policy.name
    np.testing.assert_array_equal(copy.action_probabilities(ds, q_hat), policy.action_probabilities(ds, q_hat))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_registry_accepts_exactly_the_declared_settings(kind: str) -> None:
    assert set(SETTINGS.get(kind, {})) <= set(settings_of(policy_class(kind)))
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['no_such_setting'\]"):
        build_policy(PolicyConfig(name="p", kind=kind, params={"no_such_setting": 1}))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_only_online_policies_give_an_online_learner(kind: str, fitted_log: tuple[BanditDataset, np.ndarray]) -> None:
    ds, q_hat = fitted_log
    policy = _policy(kind).fit(ds, q_hat)
    if policy.online:
        learner = policy.online_learner(ds, q_hat)
        first = learner.probabilities(0, ds.eligible[0])
        assert first.sum() == pytest.approx(1.0)
    else:
        with pytest.raises(PolicyError, match="does not learn online"):
            policy.online_learner(ds, q_hat)
