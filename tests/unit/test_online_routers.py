"""MESS+ and StageRoute: hand-computed queue, schedule and LP cases, the policy contract, replay and truth."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.optimize import linprog

from estimators import Replay
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import default_spec, simulate
from policies import DirectOfficial, PolicyError
from policies.mess_plus import MessPlus, MessPlusState
from policies.stage_lp import route_lp
from policies.stage_route import StageRoute, StageState
from policies.stream import time_order
from tests.conftest import tiny_catalog, tiny_logs

SLA = 10_000
COST, SAT = METRICS.index("cost_usd"), METRICS.index("satisfaction")


class Sim:
    """A simulated log, its dataset and the exact expected outcomes (q̂ = truth)."""

    def __init__(self, rows: int, days: float, seed: int, **spec: Any) -> None:
        self.sim = simulate(rows, days=days, seed=seed, spec=dataclasses.replace(default_spec(), **spec))
        self.ds = BanditDataset.from_frames(self.sim.logs, self.sim.catalog, sla_latency_ms=SLA)
        self.q = self.sim.world.expected_outcomes(SLA)

    def truth(self, pi: np.ndarray) -> dict[str, float]:
        return self.sim.world.true_value(pi, SLA)

    def sorted_feedback(self) -> Any:
        """The log's feedback in time order, for Replay (row t is dataset row time_order[t])."""
        order = time_order(self.ds)
        fb = self.ds.to_feedback()
        return dataclasses.replace(fb, actions=fb.actions[order], rewards=fb.rewards[order],
                                   propensities=fb.propensities[order], eligible=fb.eligible[order],
                                   sample_weight=fb.sample_weight[order], keys=fb.keys[order])


@pytest.fixture(scope="module")
def s() -> Sim:
    return Sim(6000, days=3, seed=5)


@pytest.fixture(scope="module")
def uniform_log() -> Sim:
    """Uniform logging over the eligible arms, so Replay keeps about one row in max |E|."""
    return Sim(12_000, days=3, seed=8, price_power=0.0, epsilon=1.0)


def _assert_policy(pi: np.ndarray, eligible: np.ndarray) -> None:
    assert pi.shape == eligible.shape
    assert (pi >= 0).all() and (pi[~eligible] == 0).all()
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- MESS+: hand-computed cases

@pytest.fixture
def tiny() -> tuple[BanditDataset, np.ndarray]:
    """30 hourly m1 requests, arms (cheap, fast, maker): satisfaction .6/.8/.9, cost 1/5/3 mUSD; weight 1."""
    logs = tiny_logs().filter(pl.col("model") == "m1").with_columns(sample_weight=pl.lit(1.0))
    ds = BanditDataset.from_frames(logs, tiny_catalog(), sla_latency_ms=SLA)
    q = np.zeros((ds.n, 4, len(METRICS)))
    q[:, :3, SAT] = [0.6, 0.8, 0.9]
    q[:, :3, COST] = [1e-3, 5e-3, 3e-3]
    return ds, q


def test_exploration_schedule() -> None:
    np.testing.assert_allclose(MessPlus(c=2.0).exploration(np.array([1, 32, 1024, 32**4])), [1.0, 1.0, 0.5, 0.125])
    np.testing.assert_allclose(MessPlus(c=0.5).exploration(np.array([1, 32, 1024])), [0.5, 0.25, 0.125])
    assert MessPlus(c=0.0).exploration(7) == 0.0


def test_queue_and_choices_online_by_hand(tiny: tuple[BanditDataset, np.ndarray]) -> None:
    """Cost unit 3 mUSD (mean eligible cost), V = 1: scores cheap 1/3 − .6Q, fast 5/3 − .8Q, maker 1 − .9Q."""
    ds, q = tiny
    learner = MessPlus(min_satisfaction=0.8, V=1.0, c=0.0).online_learner(ds, q)
    cheap, maker = np.array([1.0, 0, 0, 0]), np.array([0, 0, 1.0, 0])
    reward = np.full(len(METRICS), np.nan)
    steps = [(0.5, cheap, 0.3), (0.2, cheap, 0.9), (np.nan, cheap, 1.1), (0.0, cheap, 1.9), (0.0, cheap, 2.7),
             (1.0, maker, 2.5), (1.0, maker, 2.3), (1.0, maker, 2.1), (0.6, cheap, 2.3)]  # (s seen, choice, Q after)
    for t, (sat, choice, queue) in enumerate(steps):
        np.testing.assert_array_equal(learner.probabilities(t, ds.eligible[t]), choice)
        reward[SAT] = sat  # NaN: no feedback, q̂ of the served arm (.6) stands in
        learner.update(t, int(np.argmax(choice)), reward)
        assert learner.state.queue == pytest.approx(queue, abs=1e-12)
    assert learner.state.steps == len(steps)
    fresh = MessPlus(min_satisfaction=0.8, c=0.0).online_learner(ds, q)
    fresh.update(0, 2, np.where(np.arange(len(METRICS)) == SAT, 1.0, 0.0))
    assert fresh.state.queue == 0.0  # max(0, 0 + .8 − 1)


def test_exploration_mixes_uniform_over_eligible(tiny: tuple[BanditDataset, np.ndarray]) -> None:
    ds, q = tiny
    learner = MessPlus(min_satisfaction=0.8, c=1.0).online_learner(ds, q)
    np.testing.assert_allclose(learner.probabilities(0, ds.eligible[0]), [1 / 3, 1 / 3, 1 / 3, 0])
    learner.update(0, 0, q[0, 0])
    p = 2 ** -0.2
    np.testing.assert_allclose(learner.probabilities(1, ds.eligible[1]), [p / 3 + 1 - p, p / 3, p / 3, 0])


def test_mean_field_rollout_by_hand(tiny: tuple[BanditDataset, np.ndarray]) -> None:
    """Q rises .2 per cheap request; above 20/9 maker wins (−.1 each): 12 cheap, then (maker, maker, cheap)."""
    ds, q = tiny
    router = MessPlus(min_satisfaction=0.8, V=1.0, c=0.0).fit(ds, q)
    pi = router.action_probabilities(ds, q)
    _assert_policy(pi, ds.eligible)
    expected = ["cheap/m1"] * 12 + ["maker/m1", "maker/m1", "cheap/m1"] * 6
    assert [ds.arms[a] for a in pi[time_order(ds)].argmax(axis=1)] == expected
    assert router.state_.queue == pytest.approx(2.4)
    assert router.state_.steps == 30
    assert router.values_["satisfaction"] == pytest.approx(0.8 - 2.4 / 30)  # Σ (α − s_t) = Q_T: no clamping here


# ---------------------------------------------------------------- StageRoute: the per-query LP

def test_route_lp_hand_cases() -> None:
    u, c = np.array([[1.0, 0.5, 0.2]]), np.array([[2.0, 0.0, 1.0]])
    x, infeasible = route_lp(u, c, 1.0, 1.0, np.array([[True, True, False]]))
    np.testing.assert_allclose(x, [[0.5, 0.5, 0.0]])  # spend the budget exactly on the better arm
    x, _ = route_lp(u, c, 5.0, 0.4, np.ones((1, 3), dtype=bool))
    np.testing.assert_allclose(x, [[0.4, 0.4, 0.2]])  # capacity binds, budget slack
    x, infeasible = route_lp(u, c + 1.0, 0.5, 1.0, np.ones((1, 3), dtype=bool))
    np.testing.assert_allclose(x, [[0.0, 1.0, 0.0]])  # cheapest arm costs 1 > 0.5: take the cheapest allocation
    assert infeasible.tolist() == [True]
    x, _ = route_lp(u, c, 1.0, 0.2, np.array([[True, True, False]]))
    np.testing.assert_allclose(x, [[0.5, 0.5, 0.0]])  # a cap below 1 / |arms| is raised to it


def test_route_lp_matches_linprog_on_random_instances(rng: np.random.Generator) -> None:
    n, k = 600, 7
    u, c = rng.random((n, k)), rng.random((n, k))
    u[::3], c[::3] = np.round(u[::3], 1), np.round(c[::3], 1)  # many ties and parallel breakpoints
    mask = rng.random((n, k)) < 0.7
    mask[np.arange(n), rng.integers(0, k, n)] = True
    cap = rng.choice([1.0, 0.5, 0.3, 0.25], n)
    budget = rng.random(n) * 0.7
    for i in range(n):  # per row: a scalar capacity, as the router uses
        x, infeasible = route_lp(u[i : i + 1], c[i : i + 1], budget[i], float(cap[i]), mask[i : i + 1])
        m = mask[i]
        bounds = [(0, max(cap[i], 1 / m.sum()))] * int(m.sum())
        assert x.sum() == pytest.approx(1.0, abs=1e-12) and (x[0, ~m] == 0).all()
        assert (x >= -1e-15).all() and (x[0, m] <= bounds[0][1] + 1e-12).all()
        ref = linprog(-u[i, m], A_ub=c[i : i + 1, m], b_ub=[budget[i]], A_eq=np.ones((1, m.sum())), b_eq=[1],
                      bounds=bounds, method="highs")
        if ref.status == 0:
            assert not infeasible[0]
            assert c[i] @ x[0] <= budget[i] + 1e-12
            assert u[i] @ x[0] == pytest.approx(-ref.fun, abs=1e-7)
        else:
            cheapest = linprog(c[i, m], A_eq=np.ones((1, m.sum())), b_eq=[1], bounds=bounds, method="highs")
            assert infeasible[0] and c[i] @ x[0] == pytest.approx(cheapest.fun, abs=1e-7)


def test_route_lp_is_vectorised_exactly(rng: np.random.Generator) -> None:
    n, k = 3000, 6
    u, c, mask = rng.random((n, k)), rng.random((n, k)), rng.random((n, k)) < 0.8
    mask[:, 0] = True
    budget = rng.random(n) * 0.6
    x, infeasible = route_lp(u, c, budget, 0.4, mask)
    for i in range(0, n, 97):
        xi, fi = route_lp(u[i : i + 1], c[i : i + 1], budget[i], 0.4, mask[i : i + 1])
        np.testing.assert_allclose(x[i], xi[0], atol=1e-12)
        assert infeasible[i] == fi[0]


# ---------------------------------------------------------------- both routers: the policy contract

ROUTERS = [MessPlus(min_satisfaction=0.74), MessPlus(min_satisfaction=0.76, V=5.0, c=0.5), StageRoute(),
           StageRoute(max_cost_usd=0.002, capacity=0.5, max_deployed=2, stage_hours=4.0),
           StageRoute(max_cost_usd=0.003, reward="throughput_tps", pacing=False)]


@pytest.mark.parametrize("router", ROUTERS, ids=["mess_plus", "mess_plus-V5", "stage_route", "stage_route-capped",
                                                 "stage_route-throughput"])
def test_offline_matrix_is_a_deterministic_policy(s: Sim, router: Any) -> None:
    pi = router.fit(s.ds, s.q).action_probabilities(s.ds, s.q)
    _assert_policy(pi, s.ds.eligible)
    again = type(router).from_json(router.to_json())
    np.testing.assert_array_equal(again.action_probabilities(s.ds, s.q), pi)  # recomputed, not cached
    assert again.to_json() == router.to_json()
    v = s.ds.sample_weight / s.ds.sample_weight.sum()
    assert router.values_["cost_usd"] == pytest.approx(float(np.einsum("i,ik,ik->", v, pi, s.q[..., COST])))


@pytest.mark.parametrize("router", [MessPlus(min_satisfaction=0.75, c=0.2), StageRoute(max_cost_usd=0.002)],
                         ids=["mess_plus", "stage_route"])
def test_resumed_router_continues_the_rollout(s: Sim, router: Any) -> None:
    """Fit on the first day, resume on the rest: the same matrix as one rollout over all days."""
    day = (s.ds.logs["ts"] - s.ds.logs["ts"].min().replace(hour=0, minute=0, second=0, microsecond=0)).dt.total_days()
    first = day.to_numpy() < 1
    early = type(router).from_json(router.to_json()).fit(s.ds.subset(first), s.q[first])
    later = early.resumed().action_probabilities(s.ds.subset(~first), s.q[~first])
    whole = type(router).from_json(router.to_json())  # a fresh start with the units (cost, weight) of the first day
    st = early.state_
    if isinstance(router, MessPlus):
        whole.start_ = MessPlusState(0.0, 0, st.cost_unit, st.weight_unit)
    else:
        whole.start_, whole._arms = StageState.fresh(st.served.size, st.reward_scale, st.cost_unit, st.weight_unit), s.ds.arms
    full = whole.action_probabilities(s.ds, s.q)
    np.testing.assert_allclose(later, full[~first], atol=1e-12)
    assert early.resumed().to_json() != early.to_json()  # the start state is part of the description


# ---------------------------------------------------------------- truth and replay

def test_mess_plus_keeps_its_satisfaction_target_in_truth() -> None:
    sim = Sim(30_000, days=7, seed=11)
    direct = sim.truth(DirectOfficial(fallback="uniform").fit(sim.ds).action_probabilities(sim.ds))
    best = np.where(sim.ds.eligible, sim.q[..., SAT], -np.inf)
    max_sat = sim.truth((best == best.max(axis=1, keepdims=True)) / (best == best.max(axis=1, keepdims=True)).sum(1, keepdims=True))
    alpha = direct["satisfaction"]
    assert alpha < max_sat["satisfaction"] - 0.003  # the target binds but is reachable
    router = MessPlus(min_satisfaction=alpha, V=1.0, c=0.1).fit(sim.ds, sim.q)
    truth = sim.truth(router.action_probabilities(sim.ds, sim.q))
    assert truth["satisfaction"] >= alpha - 0.002
    assert truth["satisfaction"] >= alpha - router.state_.queue / sim.ds.sample_weight.sum() * sim.ds.sample_weight.mean() - 1e-9
    assert truth["cost_usd"] < 0.85 * direct["cost_usd"]
    assert truth["cost_usd"] < max_sat["cost_usd"]


def test_unreachable_target_warns(s: Sim) -> None:
    with pytest.warns(RuntimeWarning, match="the target misses min_satisfaction = 0.95"):
        MessPlus(min_satisfaction=0.95).fit(s.ds, s.q)


@pytest.fixture(scope="module")
def week() -> Sim:
    return Sim(20_000, days=7, seed=6)


@pytest.mark.parametrize("budget", [0.0025, 0.003])
def test_stage_route_respects_its_budget_in_truth(week: Sim, budget: float) -> None:
    """Over a week the pacing repays what optimism overspends (early stages, untried arms)."""
    s = week
    router = StageRoute(max_cost_usd=budget, capacity=0.7).fit(s.ds, s.q)
    pi = router.action_probabilities(s.ds, s.q)
    truth, free = s.truth(pi), s.truth(StageRoute().fit(s.ds, s.q).action_probabilities(s.ds, s.q))
    assert free["cost_usd"] > budget  # the budget binds
    assert truth["cost_usd"] <= budget * 1.03
    several = (s.ds.eligible & (pi > 0)).sum(axis=1) > 1
    assert (pi[several].max(axis=1) <= 0.7 + 1e-9).all()


def test_stage_route_deploys_at_most_max_deployed_per_model(s: Sim) -> None:
    router = StageRoute(max_deployed=2, stage_hours=12.0).fit(s.ds, s.q)
    model = dict(zip(s.ds.arms, s.ds.catalog.arms_frame["model"].to_list(), strict=True))
    assert len(router.deployments_) == 6  # three days of 12-hour stages
    for start, _, arms in router.deployments_:
        assert start.endswith(("T00:00:00.000000Z", "T12:00:00.000000Z"))
        assert max(np.unique([model[a] for a in arms], return_counts=True)[1]) <= 2
    pi = router.action_probabilities(s.ds, s.q)
    assert ((pi > 0).sum(axis=1) <= 2).mean() > 0.99  # only fallback rows use more


@pytest.mark.parametrize("router", [MessPlus(min_satisfaction=0.75, c=0.2),
                                    StageRoute(max_cost_usd=0.0025, stage_hours=12.0)], ids=["mess_plus", "stage_route"])
def test_replay_interval_contains_the_rollout_truth(uniform_log: Sim, router: Any) -> None:
    s = uniform_log
    truth = s.truth(router.fit(s.ds, s.q).action_probabilities(s.ds, s.q))
    res = Replay(scale=float(s.ds.eligible.sum(axis=1).max())).estimate(s.sorted_feedback(), router.online_learner(s.ds, s.q))
    assert res.n_overflow == 0 and res.n_accepted > 1000
    for metric, slack in (("satisfaction", 0.01), ("cost_usd", 0.1 * truth["cost_usd"])):
        j = METRICS.index(metric)
        assert abs(res.value[j] - truth[metric]) <= 3 * res.stderr[j] + slack, (metric, res.value[j], truth[metric])


def test_online_stage_route_needs_time_order(s: Sim) -> None:
    learner = StageRoute().online_learner(s.ds, s.q)
    order = time_order(s.ds)
    last = int(np.flatnonzero(order == order[-1])[0])
    learner.probabilities(last, s.ds.eligible[order[-1]])
    with pytest.raises(PolicyError, match="rows must come in time order"):
        learner.probabilities(0, s.ds.eligible[order[0]])


# ---------------------------------------------------------------- settings and usage errors

SETTING_ERRORS = [
    (MessPlus, {"min_satisfaction": 1.5}, "The 'min_satisfaction' parameter of MessPlus must be a float in [0, 1]. Got 1.5 instead."),
    (MessPlus, {"V": -1.0}, "'V' parameter of MessPlus"),
    (MessPlus, {"c": float("nan")}, "'c' parameter of MessPlus"),
    (StageRoute, {"max_cost_usd": -1.0}, "The 'max_cost_usd' parameter of StageRoute must be None or a finite float >= 0."),
    (StageRoute, {"max_deployed": 0}, "'max_deployed' parameter of StageRoute must be an int >= 1"),
    (StageRoute, {"stage_hours": 0.0}, "'stage_hours' parameter"),
    (StageRoute, {"refresh_minutes": -5.0}, "'refresh_minutes' parameter"),
    (StageRoute, {"capacity": 0.0}, "The 'capacity' parameter of StageRoute must be a float in (0, 1]. Got 0.0 instead."),
    (StageRoute, {"reward": "latency_ms"}, "'reward' parameter of StageRoute must be one of"),
    (StageRoute, {"confidence": -0.1}, "'confidence' parameter"),
    (StageRoute, {"prior_weight": 0.0}, "'prior_weight' parameter"),
    (StageRoute, {"pacing": 1}, "'pacing' parameter"),
    (StageRoute, {"seed": -1}, "'seed' parameter"),
]


@pytest.mark.parametrize(("cls", "kwargs", "match"), SETTING_ERRORS, ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in SETTING_ERRORS])
def test_bad_settings(cls: type, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [MessPlus, StageRoute])
def test_usage_errors(s: Sim, cls: type) -> None:
    with pytest.raises(PolicyError, match="routes on predicted outcomes: pass q_hat"):
        cls().fit(s.ds)
    with pytest.raises(PolicyError, match="q_hat must have shape"):
        cls().fit(s.ds, s.q[:, :, :3])
    with pytest.raises(PolicyError, match="not fitted"):
        cls().resumed()
    with pytest.raises(PolicyError, match="'order' must be a permutation"):
        cls().online_learner(s.ds, s.q, order=np.zeros(s.ds.n, dtype=np.int64))
    with pytest.raises(PolicyError, match="Not a"):
        cls.from_json('{"kind": "cheapest"}')
