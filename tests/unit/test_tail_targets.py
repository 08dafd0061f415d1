"""p95 targets of the constrained router (`policies.tails`): the q̂ column P(Y ≤ T), the LP constraint F_π(T) ≥ 0.95,
the rule's JSON, and the run's check of a p95 target against the quantile's interval."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.evaluation.targets import FAILS, HOLDS, NOT_SHOWN, check_targets
from ope.simulate import simulate
from policies import PolicyError
from policies.constrained import ConstrainedRouter
from policies.tails import TailModel, tail_column

SLA = 10_000.0
LATENCY = METRICS.index("latency_ms")


def test_tail_probability_by_hand() -> None:
    """Residual quantiles −1, 0, 1 at levels 0, ½, 1; prediction e − 1 (log 1 + q̂ = 1); T = e^1.5 − 1: z = ½ → ¾."""
    model = TailModel(np.array([0.0, 0.5, 1.0]), {"latency_ms": np.array([[-1.0, 0.0, 1.0]])})
    q = np.array([[math.e - 1]])
    assert model.probability(q, "latency_ms", math.exp(1.5) - 1)[0, 0] == pytest.approx(0.75)
    assert model.probability(q, "latency_ms", math.exp(2.5) - 1)[0, 0] == 1.0     # above the largest residual
    assert model.probability(q, "latency_ms", 0.0)[0, 0] == 0.0                   # below the smallest
    extended, names = model.columns(np.zeros((1, 1, 2)), ("a", "latency_ms"), [("latency_ms", 5.0)])
    assert extended.shape == (1, 1, 3) and names == ("a", "latency_ms", tail_column("latency_ms", 5.0))


class Case:
    """4,000 simulated requests, q̂ = the exact expectations, and a lognormal residual spread (σ = 0.6) for every arm."""

    def __init__(self) -> None:
        sim = simulate(4000, days=2, seed=21)
        self.ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
        self.q = sim.world.expected_outcomes(SLA)
        levels = np.linspace(0.0, 1.0, 201)
        z = np.array([NormalDist(0, 0.6).inv_cdf(min(max(p, 1e-4), 1 - 1e-4)) for p in levels])
        k = self.ds.catalog.n_arms
        self.model = TailModel(levels, {m: np.tile(z, (k, 1)) for m in ("latency_ms", "ttft_ms")})
        self.v = self.ds.sample_weight / self.ds.sample_weight.sum()

    def f_at(self, pi: np.ndarray, threshold: float) -> float:
        """Σ_i v_i Σ_a π P(latency ≤ T | x, a): the numpy oracle of the constraint."""
        return float(self.v @ (pi * self.model.probability(self.q[:, :, LATENCY], "latency_ms", threshold)).sum(axis=1))


@pytest.fixture(scope="module")
def case() -> Case:
    return Case()


def test_p95_cap_is_the_linear_floor_on_the_cdf_and_binds(case: Case) -> None:
    free = ConstrainedRouter(exploration=0.02).fit(case.ds, case.q)
    pi_free = free.action_probabilities(case.ds, case.q)
    cap = 60_000.0
    assert case.f_at(pi_free, cap) < 0.95   # the cheapest routing misses it: the constraint must bind
    router = ConstrainedRouter(exploration=0.02, max_p95_latency_ms=cap).use_tail_model(case.model).fit(case.ds, case.q)
    pi = router.action_probabilities(case.ds, case.q)
    assert case.f_at(pi, cap) >= 0.95 - 1e-3
    assert router.fitted_values_["max_p95_latency_ms"] == pytest.approx(case.f_at(pi, cap), abs=1e-9)
    assert case.v @ (pi * case.q[:, :, METRICS.index("cost_usd")]).sum(1) > case.v @ (pi_free * case.q[:, :, 0]).sum(1)
    again = ConstrainedRouter.from_json(router.to_json())
    np.testing.assert_array_equal(again.action_probabilities(case.ds, case.q), pi)


def test_tightening_raises_the_level(case: Case) -> None:
    router = ConstrainedRouter(exploration=0.02, max_p95_latency_ms=60_000.0).use_tail_model(case.model)
    router.tighten({"max_p95_latency_ms": 0.02}).fit(case.ds, case.q)
    assert case.f_at(router.action_probabilities(case.ds, case.q), 60_000.0) >= 0.97 - 1e-3


def test_a_p95_target_needs_the_tail_model_and_a_positive_cap(case: Case) -> None:
    with pytest.raises(PolicyError, match="max_p95_\\* targets need a distributional outcome model"):
        ConstrainedRouter(max_p95_ttft_ms=5000.0).fit(case.ds, case.q)
    with pytest.raises(ValueError, match="'max_p95_latency_ms' parameter of ConstrainedRouter must be None or a finite float > 0"):
        ConstrainedRouter(max_p95_latency_ms=-1.0)
    declared = ConstrainedRouter(max_p95_ttft_ms=5000.0).targets()
    assert [(t.key, t.metric, t.target, t.sense, t.quantile) for t in declared] == [("max_p95_ttft_ms", "ttft_ms", 5000.0, 1.0, 0.95)]
    assert str(declared[0]) == "p95 ttft_ms ≤ 5000"


@pytest.mark.parametrize(("low", "high", "verdict"), [(900.0, 990.0, HOLDS), (1001.0, 1200.0, FAILS), (950.0, 1050.0, NOT_SHOWN)])
def test_a_run_checks_a_p95_target_against_the_quantile_interval(low: float, high: float, verdict: str) -> None:
    quantiles = pl.DataFrame({"policy": ["r"], "metric": ["latency_ms"], "estimator": ["SNIPS"], "kind": ["value"], "quantile": [0.95],
                              "value": [(low + high) / 2], "ci_low": [low], "ci_high": [high], "n": [10.0]})
    check = check_targets({"r": ConstrainedRouter(max_p95_latency_ms=1000.0)}, pl.DataFrame(), "DR", quantiles)[0]
    assert (check.metric, check.estimator, check.verdict) == ("p95 latency_ms", "SNIPS", verdict)
