"""Online routers cross-fitted by fold-wise rollouts: a request's probabilities never depend on its own outcome."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest

from ope.data.dataset import BanditDataset
from ope.models.predictors import OutcomeModels, PredictorConfig, fit_outcome_models, fold_q_hat
from ope.simulate import simulate
from policies import PolicyError
from policies.crossfit import RolledOut, cross_fit_rollouts
from policies.mess_plus import MessPlus
from policies.stage_route import StageRoute

SLA = 10_000
CONFIG = PredictorConfig(n_estimators=15, folds=3)


def _fitted(logs: pl.DataFrame, catalog: pl.DataFrame) -> tuple[BanditDataset, OutcomeModels]:
    ds = BanditDataset.from_frames(logs, catalog, sla_latency_ms=SLA)
    return ds, fit_outcome_models(ds, CONFIG)


@pytest.fixture(scope="module")
def logs() -> tuple[pl.DataFrame, pl.DataFrame]:
    sim = simulate(2_500, days=2, seed=11)
    return sim.logs, sim.catalog


@pytest.fixture(scope="module")
def fitted(logs: tuple[pl.DataFrame, pl.DataFrame]) -> tuple[BanditDataset, OutcomeModels]:
    return _fitted(*logs)


def _rolled(policy: MessPlus | StageRoute, ds: BanditDataset, models: OutcomeModels) -> RolledOut:
    return cross_fit_rollouts(policy, ds, models.q_hat, models.folds, lambda f: fold_q_hat(models, ds, f))


def test_fold_predictions_are_the_out_of_fold_q_hat_on_their_own_fold(fitted: tuple[BanditDataset, OutcomeModels]) -> None:
    ds, models = fitted
    for f in range(CONFIG.folds):
        mine = models.folds == f
        np.testing.assert_allclose(fold_q_hat(models, ds, f)[mine], models.q_hat[mine], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: MessPlus(min_satisfaction=0.8), lambda: StageRoute(max_cost_usd=0.002)],
                         ids=["mess_plus", "stage_route"])
def test_a_folds_requests_are_routed_by_the_rollout_on_that_folds_models_only(
        fitted: tuple[BanditDataset, OutcomeModels], make: Callable[[], MessPlus | StageRoute]) -> None:
    """Change what every other fold's models predict: fold 0's probabilities stay bit for bit, the others' move."""
    ds, models = fitted
    fold0 = models.folds == 0
    before = _rolled(make(), ds, models)
    after = cross_fit_rollouts(make(), ds, models.q_hat, models.folds,
                               lambda f: fold_q_hat(models, ds, f) * (1.0 if f == 0 else 1.3))
    np.testing.assert_array_equal(before.probabilities[fold0], after.probabilities[fold0])
    assert np.abs(before.probabilities[~fold0] - after.probabilities[~fold0]).max() > 1e-3
    np.testing.assert_allclose(before.probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_a_folds_models_do_not_learn_from_its_outcomes(logs: tuple[pl.DataFrame, pl.DataFrame],
                                                      fitted: tuple[BanditDataset, OutcomeModels]) -> None:
    """Flip fold 0's satisfaction: fold 0's satisfaction boosters are the same trees, the other folds' are not.
    (Each fold's mean correction is estimated on the other folds' out-of-fold scores, whose models did see fold 0:
    an O(1/n) dependence through one scalar per fold, as in any cross-fit with a shared calibration.)"""
    _, models = fitted
    frame, catalog = logs
    fold0 = pl.Series(models.folds == 0)
    flipped = frame.with_columns(pl.when(fold0).then(1.0 - pl.col("satisfaction")).otherwise(pl.col("satisfaction")).alias("satisfaction"))
    _, models2 = _fitted(flipped, catalog)
    np.testing.assert_array_equal(models2.folds, models.folds)
    trees = [(a.model_to_string(), b.model_to_string()) for a, b in zip(models.boosters["satisfaction"],
                                                                         models2.boosters["satisfaction"], strict=True)]
    assert trees[0][0] == trees[0][1]
    assert all(a != b for a, b in trees[1:])


def test_rolled_out_serves_only_the_log_it_walked(fitted: tuple[BanditDataset, OutcomeModels]) -> None:
    ds, models = fitted
    rolled = _rolled(MessPlus(min_satisfaction=0.8), ds, models)
    np.testing.assert_array_equal(rolled.action_probabilities(ds), rolled.probabilities)
    deployed = MessPlus(min_satisfaction=0.8).fit(ds, models.q_hat).action_probabilities(ds, models.q_hat)
    np.testing.assert_array_equal(rolled.deployed.action_probabilities(ds, models.q_hat), deployed)  # the rule one runs
    assert not np.array_equal(deployed, rolled.probabilities)
    half = np.arange(ds.n) < ds.n // 2
    with pytest.raises(PolicyError, match="fold-wise rollouts hold the probabilities of the 2,500 requests"):
        rolled.action_probabilities(ds.subset(half))
