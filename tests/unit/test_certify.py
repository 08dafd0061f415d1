"""Cross-fitted policies, target certification and the target checks every run makes."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from estimators import DR
from estimators.inference import SkewCorrected
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.evaluation.batch import BatchRows
from ope.evaluation.certify import fit_cross_fitted
from ope.evaluation.targets import FAILS, HOLDS, NOT_SHOWN, check_targets
from ope.simulate import simulate
from policies import BasePolicy, MessPlus, StageRoute
from policies.base import Pairs, policy_from_json, policy_to_json
from policies.constrained import ConstrainedRouter
from policies.crossfit import CrossFitted, cross_fit, key_folds

SLA = 10_000
FOLDS = 5  # the run's default
SAT, HIT = METRICS.index("satisfaction"), METRICS.index("sla_hit")


@dataclass(kw_only=True)
class KeyRecorder(BasePolicy):
    """Uniform routing that remembers the row keys it was fitted on."""

    name: str = "recorder"
    learns: ClassVar[bool] = True
    cross_fit: ClassVar[bool] = True
    seen_: set[int] = field(default_factory=set, init=False)

    def fit(self, dataset: BanditDataset, q_hat: np.ndarray | None = None) -> KeyRecorder:
        self.seen_ = set(dataset.keys.tolist())
        return self

    def action_probabilities(self, dataset: BanditDataset, q_hat: np.ndarray | None = None) -> np.ndarray:
        el = dataset.eligible.astype(float)
        return el / el.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def world() -> tuple[BanditDataset, np.ndarray, object]:
    sim = simulate(3000, days=2, seed=31)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
    return ds, sim.world.expected_outcomes(SLA), sim.world


def test_every_fold_copy_never_saw_its_own_rows(world: tuple[BanditDataset, np.ndarray, object]) -> None:
    ds, q, _ = world
    copies = cross_fit(KeyRecorder(), ds, q, 4)
    fold = key_folds(ds.keys, 4)
    for f, policy in enumerate(copies):
        assert not policy.seen_ & set(ds.keys[fold == f].tolist())
        assert policy.seen_ == set(ds.keys[fold != f].tolist())


def test_each_row_is_routed_by_its_folds_copy_and_json_keeps_it(world: tuple[BanditDataset, np.ndarray, object]) -> None:
    ds, q, _ = world
    router = ConstrainedRouter(min_satisfaction=0.7, exploration=0.05, certify=False)
    router.fit(ds, q)
    evaluated = CrossFitted(router, cross_fit(router, ds, q, 3))
    pi = evaluated.action_probabilities(ds, q)
    fold = key_folds(ds.keys, 3)
    for f, policy in enumerate(evaluated.folds):
        rows = fold == f
        np.testing.assert_allclose(pi[rows], policy.action_probabilities(ds.subset(rows), q[rows]), atol=1e-12)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, atol=1e-9)
    again = policy_from_json(policy_to_json(evaluated))
    np.testing.assert_array_equal(again.action_probabilities(ds, q), pi)
    pairs = Pairs.of(ds.eligible)  # a batch of any rows: each still goes to its own fold's copy
    half = np.arange(ds.n) % 2 == 0
    np.testing.assert_allclose(evaluated.pair_probabilities(ds.subset(half), Pairs.of(ds.eligible[half]), q[half]),
                               pi[half][ds.eligible[half]], atol=1e-12)
    assert pairs.rows.size == ds.eligible.sum()


def _biased(ds: BanditDataset, q: np.ndarray) -> np.ndarray:
    """q̂ that overrates the satisfaction and SLA hit of every arm but the official one by 0.06 (an optimiser's trap)."""
    official = ds.catalog.arms_frame["official"].to_numpy()
    out = q.copy()
    for m in (SAT, HIT):
        out[:, ~official, m] = np.clip(out[:, ~official, m] + 0.06, 0, 1)
    return out


def test_certification_tightens_until_the_bound_meets_each_target(world: tuple[BanditDataset, np.ndarray, object]) -> None:
    ds, q, truth = world
    q_hat = _biased(ds, q)
    rows = BatchRows(ds, ds.to_feedback(), q_hat)
    targets = {"min_satisfaction": 0.72, "min_sla_hit": 0.45}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain, none = fit_cross_fitted(ConstrainedRouter(**targets, exploration=0.05, certify=False), rows, FOLDS,
                                       inference=SkewCorrected())
        router = ConstrainedRouter(**targets, exploration=0.05, certify_rounds=6)
        evaluated, cert = fit_cross_fitted(router, rows, FOLDS, inference=SkewCorrected())
    assert none is None and cert is not None
    assert [t.key for t in cert.targets] == list(targets)
    for t in cert.targets:
        assert t.holds == (t.bound >= t.target)
        assert t.solved_at >= t.target
    assert cert.status == "certified", cert
    assert max(router.tightening_.values()) > 0
    # the certificate is the evaluated policy's DR bound on every row by the run's default interval method (skew-corrected)
    est = DR().estimate(rows.feedback, target=evaluated.action_probabilities(ds, q_hat), q_hat=q_hat, inference=SkewCorrected())
    low, _ = est.ci(2 * router.certify_alpha)
    assert [t.bound for t in cert.targets] == pytest.approx([low[SAT], low[HIT]], rel=1e-12)
    assert low[SAT] >= 0.72 and low[HIT] >= 0.45
    assert router.certificate_ is not None and router.certificate_["status"] == "certified"
    assert router.certificate_["fold_rounds"] == cert.fold_rounds and len(cert.fold_rounds) == FOLDS
    again = ConstrainedRouter.from_json(router.to_json())
    assert again.tightening_ == router.tightening_ and again.certificate_ == router.certificate_
    # the uncertified router believes q̂ and misses in truth; the certified one does not
    pi_plain = plain.deployed.action_probabilities(ds, q_hat)
    assert truth.true_value(pi_plain, SLA)["satisfaction"] < 0.72
    assert truth.true_value(router.action_probabilities(ds, q_hat), SLA)["satisfaction"] >= 0.72


def test_each_copy_is_held_to_its_targets_on_the_other_folds_rows(world: tuple[BanditDataset, np.ndarray, object]) -> None:
    """How strict copy f is was decided by DR bounds on the rows outside fold f, never on the rows it routes: at its
    round, every copy that met its targets (refitted at that round's tightening) has bounds there that meet both."""
    ds, q, _ = world
    q_hat = _biased(ds, q)
    rows = BatchRows(ds, ds.to_feedback(), q_hat)
    targets = {"min_satisfaction": 0.72, "min_sla_hit": 0.45}
    router = ConstrainedRouter(**targets, exploration=0.05, certify_rounds=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluated, cert = fit_cross_fitted(router, rows, FOLDS, inference=SkewCorrected())
    assert cert is not None and any(cert.folds_met), cert
    fold = key_folds(ds.keys, FOLDS)
    for f, copy in enumerate(evaluated.folds):
        if not cert.folds_met[f]:
            assert cert.fold_rounds[f] == max(cert.fold_rounds)  # it kept the last round tried
            continue
        at_round = ConstrainedRouter(**targets, exploration=0.05).tighten(copy.tightening_)
        judges = fold != f
        pi = CrossFitted(at_round, cross_fit(at_round, ds, q_hat, FOLDS)).action_probabilities(ds, q_hat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = DR().estimate(rows.feedback.subset(judges), target=pi[judges], q_hat=q_hat[judges], inference=SkewCorrected())
        low, _ = est.ci(2 * router.certify_alpha)
        assert low[SAT] >= 0.72 and low[HIT] >= 0.45, (f, cert.fold_rounds, copy.tightening_)


@pytest.mark.parametrize(("sense", "low", "high", "verdict"), [
    (-1.0, 0.71, 0.75, HOLDS), (-1.0, 0.65, 0.69, FAILS), (-1.0, 0.68, 0.72, NOT_SHOWN),
    (1.0, 0.0010, 0.0019, HOLDS), (1.0, 0.0021, 0.0030, FAILS), (1.0, 0.0015, 0.0025, NOT_SHOWN),
], ids=["floor-holds", "floor-fails", "floor-straddles", "cap-holds", "cap-fails", "cap-straddles"])
def test_target_verdicts(sense: float, low: float, high: float, verdict: str) -> None:
    metric, target = ("satisfaction", 0.70) if sense < 0 else ("cost_usd", 0.002)
    policy = MessPlus(name="p", min_satisfaction=target) if sense < 0 else StageRoute(name="p", max_cost_usd=target)
    estimates = pl.DataFrame({"policy": ["p"], "metric": [metric], "estimator": ["DR"], "kind": ["value"],
                              "value": [(low + high) / 2], "ci_low": [low], "ci_high": [high]})
    (check,) = check_targets({"p": policy}, estimates, "DR")
    assert (check.metric, check.target, check.verdict) == (metric, target, verdict)
    assert check.to_dict()["ci"] == [low, high]
    assert ("TARGET MISSED" in check.warning) and (("below" in check.warning) == (sense < 0))


def test_heuristics_declare_no_targets_and_missing_estimates_are_not_estimated() -> None:
    router = ConstrainedRouter(name="r", min_sla_hit=0.5, max_share={"groq": 0.3})
    estimates = pl.DataFrame({"policy": ["r"], "metric": ["sla_hit"], "estimator": ["DR"], "kind": ["value"],
                              "value": [math.nan], "ci_low": [math.nan], "ci_high": [math.nan]})
    assert [t.key for t in router.targets()] == ["min_sla_hit"]  # provider shares are not estimated outcomes
    assert check_targets({"r": router, "h": KeyRecorder()}, estimates, "DR")[0].verdict == "not estimated"
