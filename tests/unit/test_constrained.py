"""The cvxpy-constrained router: LP optimality, targets, exploration, infeasibility, the deployable rule."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy.optimize import linprog

from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.models.predictors import PredictorConfig, fit_outcome_models
from ope.simulate import simulate
from policies import DirectOfficial, Fastest, Mixture, PolicyError, PriceWeighted, Uniform
from policies.constrained import ConstrainedRouter
from policies.routing_lp import stratified_rows

SLA = 10_000
COST, SAT, TPS, HIT = (METRICS.index(m) for m in ("cost_usd", "satisfaction", "throughput_tps", "sla_hit"))


class Sim:
    """A small simulated log, its dataset and the exact expected outcomes (q̂ = truth)."""

    def __init__(self, seed: int) -> None:
        self.sim = simulate(4000, days=2, seed=seed)
        self.ds = BanditDataset.from_frames(self.sim.logs, self.sim.catalog, sla_latency_ms=SLA)
        self.q = self.sim.world.expected_outcomes(SLA)
        self.providers = np.array(self.ds.catalog.arms_frame["provider"].to_list())

    def means(self, pi: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
        """Weighted means of every metric under pi (numpy oracle), on all rows or a subset."""
        rows = np.ones(self.ds.n, dtype=bool) if rows is None else rows
        v = self.ds.sample_weight[rows] / self.ds.sample_weight[rows].sum()
        return dict(zip(METRICS, np.einsum("i,ik,ikm->m", v, pi[rows], self.q[rows]), strict=True))

    def share(self, pi: np.ndarray, provider: str, rows: np.ndarray | None = None) -> float:
        rows = np.ones(self.ds.n, dtype=bool) if rows is None else rows
        v = self.ds.sample_weight[rows] / self.ds.sample_weight[rows].sum()
        return float((v @ pi[rows])[self.providers == provider].sum())

    def best_alone(self, per_pair: np.ndarray, eps: float, pick: Any) -> float:
        """Closed-form best mean of a per-pair quantity with only the exploration floor."""
        el = self.ds.eligible
        v = self.ds.sample_weight / self.ds.sample_weight.sum()
        fill = np.inf if pick is np.min else -np.inf
        mean = np.where(el, per_pair, 0).sum(1) / el.sum(1)
        return float(v @ (eps * mean + (1 - eps) * pick(np.where(el, per_pair, fill), axis=1)))


@pytest.fixture(scope="module")
def s() -> Sim:
    return Sim(seed=21)


def _fit(s: Sim, **kwargs: Any) -> tuple[ConstrainedRouter, np.ndarray]:
    router = ConstrainedRouter(**kwargs).fit(s.ds, s.q)
    return router, router.action_probabilities(s.ds, s.q)


def _assert_policy(pi: np.ndarray, eligible: np.ndarray) -> None:
    assert pi.shape == eligible.shape
    assert (pi >= 0).all()
    assert (pi[~eligible] == 0).all()
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-9)


SETTINGS = [
    {},
    {"min_satisfaction": 0.75, "min_sla_hit": 0.7, "exploration": 0.02},
    {"min_satisfaction": 0.75, "max_share": {"groq": 0.05, "together": 0.1}, "exploration": 0.05},
    {"objective": "throughput", "max_cost_usd": 0.0025, "min_satisfaction": 0.75, "exploration": 0.02},
]


@pytest.mark.parametrize("kwargs", SETTINGS, ids=lambda k: ",".join(k) or "unconstrained")
def test_rule_is_a_policy_that_meets_its_targets_on_the_fitted_rows(s: Sim, kwargs: dict[str, Any]) -> None:
    router, pi = _fit(s, **kwargs)
    _assert_policy(pi, s.ds.eligible)
    m = s.means(pi)
    for key, metric in (("min_satisfaction", "satisfaction"), ("min_sla_hit", "sla_hit")):
        if key in kwargs:
            assert m[metric] >= kwargs[key] - 1e-6
    if "max_cost_usd" in kwargs:
        assert m["cost_usd"] <= kwargs["max_cost_usd"] * (1 + 1e-6)
    for provider, cap in kwargs.get("max_share", {}).items():
        assert s.share(pi, provider) <= cap + 1e-6
    objective = "throughput_tps" if kwargs.get("objective") == "throughput" else "cost_usd"
    assert m[objective] == pytest.approx(router.lp_values_[objective], rel=1e-5)  # the rule is as good as the LP
    for metric in METRICS:
        assert router.fitted_values_[metric] == pytest.approx(m[metric], rel=1e-12)


def test_lp_matches_scipy_highs_and_the_multipliers_certify_it(s: Sim) -> None:
    eps, s_min, h_min = 0.03, 0.76, 0.72
    router, _ = _fit(s, min_satisfaction=s_min, min_sla_hit=h_min, exploration=eps)
    el, v = s.ds.eligible, s.ds.sample_weight / s.ds.sample_weight.sum()
    rows, cols = np.nonzero(el)
    q = s.q[rows, cols]
    a_eq = sp.csr_matrix((np.ones(rows.size), (rows, np.arange(rows.size))), shape=(s.ds.n, rows.size))
    res = linprog(v[rows] * q[:, COST], A_ub=np.vstack([-v[rows] * q[:, SAT], -v[rows] * q[:, HIT]]), b_ub=[-s_min, -h_min],
                  A_eq=a_eq, b_eq=np.ones(s.ds.n), bounds=np.column_stack([eps / el.sum(1)[rows], np.ones(rows.size)]),
                  method="highs")
    assert res.status == 0
    assert router.lp_values_["cost_usd"] == pytest.approx(res.fun, rel=1e-6)
    assert router.fitted_values_["cost_usd"] == pytest.approx(res.fun, rel=1e-6)
    # Lagrangian dual at the router's multipliers (USD per unit of each target) equals the optimum
    lam_s, lam_h = router.multipliers_["min_satisfaction"], router.multipliers_["min_sla_hit"]
    score = s.q[..., COST] - lam_s * s.q[..., SAT] - lam_h * s.q[..., HIT]
    per_row = eps * np.where(el, score, 0).sum(1) / el.sum(1) + (1 - eps) * np.where(el, score, np.inf).min(1)
    assert v @ per_row + lam_s * s_min + lam_h * h_min == pytest.approx(res.fun, rel=1e-6)


def test_highs_and_clarabel_agree(s: Sim) -> None:
    kwargs = {"min_satisfaction": 0.76, "min_sla_hit": 0.7, "max_share": {"groq": 0.05}, "exploration": 0.02}
    a, pa = _fit(s, **kwargs)
    b, pb = _fit(s, solver="HIGHS", **kwargs)
    assert a.lp_values_["cost_usd"] == pytest.approx(b.lp_values_["cost_usd"], rel=1e-6)
    assert s.means(pa)["cost_usd"] == pytest.approx(s.means(pb)["cost_usd"], rel=1e-5)


@pytest.mark.parametrize("baseline", [DirectOfficial(fallback="uniform"), Uniform(), PriceWeighted(), Fastest()], ids=lambda p: p.name)
def test_cheaper_than_any_baseline_that_meets_the_same_targets(s: Sim, baseline: Any) -> None:
    eps = 0.02
    pi_b = Mixture(policy=baseline, epsilon=eps).fit(s.ds).action_probabilities(s.ds)
    mb = s.means(pi_b)
    _, pi = _fit(s, min_satisfaction=float(mb["satisfaction"]), min_sla_hit=float(mb["sla_hit"]), exploration=eps)
    m = s.means(pi)
    assert m["cost_usd"] <= mb["cost_usd"] * (1 + 1e-6)
    assert m["satisfaction"] >= mb["satisfaction"] - 1e-6
    assert m["sla_hit"] >= mb["sla_hit"] - 1e-6


def test_without_targets_every_request_goes_to_its_cheapest_predicted_arm(s: Sim) -> None:
    _, pi = _fit(s)
    cost = np.where(s.ds.eligible, s.q[..., COST], np.inf)
    chosen = np.take_along_axis(cost, pi.argmax(1)[:, None], 1)[:, 0]
    np.testing.assert_allclose(chosen, cost.min(1), rtol=1e-9)


def _binding_case(s: Sim, kind: str) -> tuple[dict[str, Any], str, float]:
    """Settings with one target set halfway between the free optimum and the best reachable."""
    eps = 0.02
    if kind == "max_share":
        _, pi0 = _fit(s, exploration=eps)
        provider = max(set(s.providers), key=lambda p: s.share(pi0, p))
        return {"max_share": {provider: s.share(pi0, provider) / 2}}, provider, s.share(pi0, provider) / 2
    if kind == "max_cost_usd":
        _, pi0 = _fit(s, objective="throughput", exploration=eps)
        low, free = s.best_alone(s.q[..., COST], eps, np.min), s.means(pi0)["cost_usd"]
        return {"objective": "throughput", "max_cost_usd": (low + free) / 2}, "cost_usd", (low + free) / 2
    metric = {"min_satisfaction": "satisfaction", "min_sla_hit": "sla_hit"}[kind]
    _, pi0 = _fit(s, exploration=eps)
    high, free = s.best_alone(s.q[..., METRICS.index(metric)], eps, np.max), s.means(pi0)[metric]
    return {kind: (high + free) / 2}, metric, (high + free) / 2


@pytest.mark.parametrize("kind", ["min_satisfaction", "min_sla_hit", "max_cost_usd", "max_share"])
def test_each_target_binds_when_tightened(s: Sim, kind: str) -> None:
    kwargs, what, target = _binding_case(s, kind)
    router, pi = _fit(s, exploration=0.02, **kwargs)
    got = s.share(pi, what) if kind == "max_share" else s.means(pi)[what]
    assert got == pytest.approx(target, rel=1e-5)
    (multiplier,) = router.multipliers_.values()
    assert multiplier > 0
    free, _ = _fit(s, exploration=0.02, objective=kwargs.get("objective", "cost"))
    objective = "throughput_tps" if kind == "max_cost_usd" else "cost_usd"
    worse = router.fitted_values_[objective] < free.fitted_values_[objective] if kind == "max_cost_usd" else (
        router.fitted_values_[objective] > free.fitted_values_[objective])
    assert worse


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_exploration_floor_on_every_eligible_arm(s: Sim, eps: float) -> None:
    router, pi = _fit(s, min_satisfaction=0.75, exploration=eps)
    floor = eps / s.ds.eligible.sum(axis=1, keepdims=True)
    assert (pi[s.ds.eligible] >= np.broadcast_to(floor, pi.shape)[s.ds.eligible] - 1e-12).all()
    assert (router.lp_probabilities_[s.ds.eligible] >= np.broadcast_to(floor, pi.shape)[s.ds.eligible] - 1e-9).all()


def test_provider_caps_hold(s: Sim) -> None:
    caps = {"groq": 0.02, "deepinfra": 0.05, "together": 0.05}
    router, pi = _fit(s, max_share=caps, min_satisfaction=0.74, exploration=0.02)
    for provider, cap in caps.items():
        assert s.share(pi, provider) <= cap + 1e-6
    assert set(router.rule_.provider_price) == set(caps)


def test_unreachable_target_names_it_and_the_best_value(s: Sim) -> None:
    eps = 0.02
    best = s.best_alone(s.q[..., SAT], eps, np.max)
    expected = f"min_satisfaction = 0.99 is infeasible: the best reachable mean satisfaction is {best:.4g} even with no other target."
    with pytest.raises(PolicyError, match=re.escape(expected)):
        ConstrainedRouter(min_satisfaction=0.99, exploration=eps).fit(s.ds, s.q)


def test_share_cap_below_captive_traffic_is_infeasible(s: Sim) -> None:
    captive = s.ds.eligible & (s.ds.eligible.sum(1, keepdims=True) == 1)
    provider = s.providers[np.flatnonzero(captive.any(0))[0]]
    best = s.best_alone(np.broadcast_to(s.providers == provider, s.ds.eligible.shape).astype(float), 0.0, np.min)
    assert best > 0
    with pytest.raises(PolicyError, match=re.escape(f"the best reachable share of requests on {provider} is {best:.4g}")):
        ConstrainedRouter(max_share={provider: 0.0}).fit(s.ds, s.q)


def test_jointly_infeasible_targets_report_the_best_under_the_others(s: Sim) -> None:
    cheapest = s.best_alone(s.q[..., COST], 0.0, np.min)
    target = round(s.best_alone(s.q[..., SAT], 0.0, np.max) - 0.005, 3)  # reachable alone, not on a tight budget
    with pytest.raises(PolicyError) as info:
        ConstrainedRouter(min_satisfaction=target, max_cost_usd=cheapest * 1.05).fit(s.ds, s.q)
    message = str(info.value)
    match = re.search(rf"min_satisfaction = {target:g} is infeasible: the best reachable mean satisfaction is ([0-9.]+) "
                      "under the other constraints", message)
    assert match, message
    assert float(match.group(1)) < target
    assert "max_cost_usd = " in message and "under the other constraints" in message


def test_json_round_trip_routes_identically(s: Sim) -> None:
    router, pi = _fit(s, min_satisfaction=0.755, min_sla_hit=0.7, max_share={"groq": 0.05}, exploration=0.02)
    text = router.to_json()
    again = ConstrainedRouter.from_json(text)
    np.testing.assert_array_equal(again.action_probabilities(s.ds, s.q), pi)
    assert again.to_json() == text
    assert again.min_satisfaction == 0.755 and again.max_share == {"groq": 0.05}


def test_ties_split_as_the_lp_did_on_duplicated_contexts(s: Sim) -> None:
    """q̂ constant per (model, task): whole groups tie; an even split would move their constraint values."""
    group = s.ds.logs.select(pl.struct("model", "task").rank("dense")).to_series().to_numpy() - 1
    sums = np.zeros((group.max() + 1, *s.q.shape[1:]))
    np.add.at(sums, group, s.q)
    q = (sums / np.bincount(group)[:, None, None])[group]
    router = ConstrainedRouter(min_satisfaction=0.755, min_sla_hit=0.64, exploration=0.05).fit(s.ds, q)
    assert router.rule_.tie_split
    for key in ("min_satisfaction", "min_sla_hit", "cost_usd"):
        assert router.fitted_values_[key] == pytest.approx(router.lp_values_[key], rel=1e-6)


def test_rule_from_day_one_holds_approximately_on_day_two(s: Sim) -> None:
    later = (s.ds.logs["ts"] - s.ds.logs["ts"].min()).dt.total_hours().to_numpy() >= 24
    targets = {"min_satisfaction": 0.755, "min_sla_hit": 0.7, "max_share": {"groq": 0.05}}
    router = ConstrainedRouter(exploration=0.02, **targets).fit(s.ds.subset(~later), s.q[~later])
    pi = router.action_probabilities(s.ds, s.q)  # every row; the first day's rows were fitted
    for rows, tol in ((~later, 1e-6), (later, 0.01)):
        m = s.means(pi, rows)
        assert m["satisfaction"] >= 0.755 - tol
        assert m["sla_hit"] >= 0.7 - 2 * tol
        assert s.share(pi, "groq", rows) <= 0.05 + 2 * tol


def test_cheaper_than_direct_official_and_meets_satisfaction_in_truth(s: Sim) -> None:
    world = s.sim.world
    direct = world.true_value(DirectOfficial(fallback="uniform").fit(s.ds).action_probabilities(s.ds), SLA)
    target = direct["satisfaction"]
    _, pi = _fit(s, min_satisfaction=target, exploration=0.02)
    truth = world.true_value(pi, SLA)
    assert truth["satisfaction"] >= target - 1e-6
    assert truth["cost_usd"] < 0.9 * direct["cost_usd"]


def test_with_cross_fitted_outcome_models(s: Sim) -> None:
    q_hat = fit_outcome_models(s.ds, PredictorConfig(folds=3, n_estimators=30)).q_hat
    router = ConstrainedRouter(min_satisfaction=0.75, min_sla_hit=0.6, exploration=0.02).fit(s.ds, q_hat)
    pi = router.action_probabilities(s.ds, q_hat)
    _assert_policy(pi, s.ds.eligible)
    v = s.ds.sample_weight / s.ds.sample_weight.sum()
    predicted = np.einsum("i,ik,ikm->m", v, pi, q_hat)
    assert predicted[SAT] >= 0.75 - 1e-6 and predicted[HIT] >= 0.6 - 1e-6
    direct = s.sim.world.true_value(DirectOfficial(fallback="uniform").fit(s.ds).action_probabilities(s.ds), SLA)
    assert s.sim.world.true_value(pi, SLA)["cost_usd"] < direct["cost_usd"]


def test_large_logs_are_solved_on_a_stratified_sample(s: Sim) -> None:
    router, pi = _fit(s, min_satisfaction=0.755, exploration=0.02, max_rows=1000, seed=3)
    models = s.ds.logs["model"].to_numpy()
    kept = router.fitted_rows_
    assert 900 <= kept.size <= 1000 + len(set(models))
    assert set(models[kept]) == set(models)
    _assert_policy(pi, s.ds.eligible)
    assert s.means(pi)["satisfaction"] >= 0.755 - 0.01


def test_stratified_rows_is_proportional_and_seeded() -> None:
    strata = np.repeat(np.array(["a", "b", "c"]), [600, 300, 100])
    idx, inflate = stratified_rows(strata, 100, seed=1)
    assert np.bincount(np.unique(strata, return_inverse=True)[1][idx]).tolist() == [60, 30, 10]
    assert inflate.sum() == pytest.approx(1000)
    np.testing.assert_array_equal(idx, stratified_rows(strata, 100, seed=1)[0])
    assert not np.array_equal(idx, stratified_rows(strata, 100, seed=2)[0])


SETTING_ERRORS = [
    ({"objective": "latency"}, "The 'objective' parameter of ConstrainedRouter must be 'cost' or 'throughput'. Got 'latency' instead."),
    ({"min_satisfaction": 1.5}, "The 'min_satisfaction' parameter of ConstrainedRouter must be None or a float in [0, 1]. Got 1.5 instead."),
    ({"min_sla_hit": -0.1}, "'min_sla_hit' parameter"),
    ({"max_cost_usd": -1.0}, "'max_cost_usd' parameter"),
    ({"max_share": {"groq": 2.0}}, "'max_share' parameter"),
    ({"max_share": ["groq"]}, "'max_share' parameter"),
    ({"exploration": 1.0}, "The 'exploration' parameter of ConstrainedRouter must be a float in [0, 1). Got 1.0 instead."),
    ({"solver": "GUROBI_NOT_HERE"}, "'solver' parameter"),
    ({"max_rows": 0}, "'max_rows' parameter"),
    ({"seed": -1}, "'seed' parameter"),
]


@pytest.mark.parametrize(("kwargs", "match"), SETTING_ERRORS, ids=[next(iter(k)) for k, _ in SETTING_ERRORS])
def test_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        ConstrainedRouter(**kwargs)


def test_usage_errors(s: Sim) -> None:
    with pytest.raises(PolicyError, match="not fitted"):
        ConstrainedRouter().action_probabilities(s.ds, s.q)
    with pytest.raises(PolicyError, match="routes on predicted outcomes: pass q_hat"):
        ConstrainedRouter().fit(s.ds)
    with pytest.raises(PolicyError, match="routes on predicted outcomes: pass q_hat"):
        Mixture(policy=ConstrainedRouter(), epsilon=0.1).fit(s.ds)
    with pytest.raises(PolicyError, match="q_hat must have shape"):
        ConstrainedRouter().fit(s.ds, s.q[:, :, :3])
    with pytest.raises(PolicyError, match=re.escape("max_share names unknown providers ['nobody']")):
        ConstrainedRouter(max_share={"nobody": 0.5}).fit(s.ds, s.q)
    with pytest.raises(PolicyError, match="Not a constrained-router rule"):
        ConstrainedRouter.from_json('{"kind": "cheapest"}')
