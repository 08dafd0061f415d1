"""Routing policies against the simulator's exact truth: fit on earlier days, judge on later ones.

On the Qwen3-32B scenario (``ope.simulate.scenarios``), each seed simulates six days. The outcome
models learn from the first four days only (``fit_outcome_models(..., train=early)``), the
constrained router is fitted on those days and its deployable rule routes the last two days, which
neither the models nor the router have seen. The truth of the later days comes from a `World`
rebuilt on exactly those request contexts (same spec, same window, so the same outcome
distributions and sample weights).

The router targets *predicted* outcomes, and it picks the arms where q̂ looks best, so its true
satisfaction and SLA hit rate fall a little short of what it predicts (q̂'s per-arm satisfaction
errors are about ±0.02 here). The router is therefore fitted with a margin above the targets the
truth is held to: ``MARGIN`` on both, and the truth must then reach the target within ``TOL``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from estimators import DR, IPS, SupportWarning
from ope.data.dataset import BanditDataset
from ope.models.predictors import PredictorConfig, fit_outcome_models
from ope.simulate import World, simulate
from ope.simulate.clock import US_PER_DAY, to_us
from ope.simulate.scenarios import qwen3_32b_spec
from policies import DirectOfficial, MessPlus
from policies.constrained import ConstrainedRouter

SLA = 10_000.0
ROWS, DAYS, EARLY_DAYS = 12_000, 6, 4
SEEDS = (501, 502, 503, 504)
#: targets the truth is held to, the margin the router is fitted with above them, and the tolerance
MIN_SATISFACTION, MIN_SLA_HIT = 0.70, 0.60
MARGIN, TOL = 0.02, 0.01
MESS_TARGET = 0.70
CHECKED = ("cost_usd", "satisfaction", "sla_hit")


@dataclass
class Split:
    """One seed: the later days' dataset, q̂ from models fitted on the earlier days, and the truth."""

    late: BanditDataset
    q_late: np.ndarray
    world_late: World
    router: ConstrainedRouter
    pi_router: np.ndarray
    pi_official: np.ndarray


def _split(seed: int) -> Split:
    sim = simulate(ROWS, days=DAYS, seed=seed, spec=qwen3_32b_spec())
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
    cut = to_us(sim.world.spec.start) + EARLY_DAYS * US_PER_DAY
    early = sim.world.contexts.ts_us < cut
    q = fit_outcome_models(ds, PredictorConfig(folds=3, n_estimators=60), train=early).q_hat
    router = ConstrainedRouter(
        objective="cost",
        min_satisfaction=MIN_SATISFACTION + MARGIN,
        min_sla_hit=MIN_SLA_HIT + MARGIN,
        exploration=0.05,
        max_rows=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        router.fit(ds.subset(early), q[early])
    late = ds.subset(~early)
    world_late = World(sim.world.spec, sim.world.contexts.take(np.flatnonzero(~early)), days=sim.world.days)
    return Split(
        late,
        q[~early],
        world_late,
        router,
        router.action_probabilities(late, q[~early]),
        DirectOfficial(fallback="cheapest").fit(late).action_probabilities(late),
    )


@pytest.fixture(scope="module")
def splits() -> list[Split]:
    return [_split(seed) for seed in SEEDS]


def test_later_world_is_the_same_world_on_fewer_rows() -> None:
    sim = simulate(3_000, days=2, seed=7, spec=qwen3_32b_spec())
    rows = np.flatnonzero(sim.world.contexts.ts_us >= to_us(sim.world.spec.start) + US_PER_DAY)
    sub = World(sim.world.spec, sim.world.contexts.take(rows), days=sim.world.days)
    full, part = sim.world.expected_outcomes(SLA), sub.expected_outcomes(SLA)
    np.testing.assert_allclose(part, full[rows], rtol=1e-12, atol=0)  # SLA quadrature runs in chunks
    np.testing.assert_array_equal(sub.logging_probabilities, sim.world.logging_probabilities[rows])
    pi = sim.world.logging_probabilities
    w = sim.world.sample_weight
    expected = np.einsum("i,ik,ikm->m", w[rows], pi[rows], full[rows]) / w[rows].sum()
    np.testing.assert_allclose(list(sub.true_value(pi[rows], SLA).values()), expected, rtol=1e-12)


@pytest.mark.slow
def test_router_meets_its_targets_in_truth_on_later_days(splits: list[Split]) -> None:
    for s in splits:
        truth = s.world_late.true_value(s.pi_router, SLA)
        assert truth["satisfaction"] >= MIN_SATISFACTION - TOL, truth
        assert truth["sla_hit"] >= MIN_SLA_HIT - TOL, truth


@pytest.mark.slow
def test_router_is_cheaper_than_direct_official_access_in_truth(splits: list[Split]) -> None:
    for s in splits:
        routed = s.world_late.true_value(s.pi_router, SLA)["cost_usd"]
        official = s.world_late.true_value(s.pi_official, SLA)["cost_usd"]
        assert routed < 0.8 * official, (routed, official)


@pytest.mark.slow
def test_intervals_on_later_days_cover_the_truth(splits: list[Split]) -> None:
    """95 % DR and IPS intervals of the router's cost, satisfaction and SLA hit: most cover the truth."""
    hits, cases = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for s in splits:
            truth = s.world_late.true_value(s.pi_router, SLA)
            fb = s.late.to_feedback()
            for est in (DR(), IPS()):
                r = est.estimate(fb, target=s.pi_router, q_hat=s.q_late)
                for metric in CHECKED:
                    j = s.late.metrics.index(metric)
                    hits += int(r.ci_low[j] <= truth[metric] <= r.ci_high[j])
                    cases += 1
    assert hits >= 0.75 * cases, f"{hits} of {cases} intervals cover the truth"


@pytest.mark.slow
def test_mess_plus_keeps_its_satisfaction_target_on_later_days(splits: list[Split]) -> None:
    for s in splits:
        router = MessPlus(min_satisfaction=MESS_TARGET + MARGIN)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pi = router.fit(s.late, s.q_late).action_probabilities(s.late, s.q_late)
        truth = s.world_late.true_value(pi, SLA)
        assert truth["satisfaction"] >= MESS_TARGET - TOL, truth
