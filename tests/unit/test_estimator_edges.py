"""Edge cases found in review: no overlap, mismatched bootstrap partials, numpy hyperparameters."""

from __future__ import annotations

import numpy as np
import pytest

from estimators import IPS, SNIPS, BanditFeedback, Bootstrap, EstimatorInputError, EstimatorSupportError


def test_self_normalized_without_overlap_is_an_error() -> None:
    fb = BanditFeedback(actions=np.array([0, 0]), rewards=np.array([1.0, 0.0]), propensities=np.array([0.5, 0.5]), n_arms=2)
    with pytest.raises(EstimatorSupportError, match="normalizer Σ w is 0"):
        SNIPS().estimate(fb, target=np.array([[0.0, 1.0], [0.0, 1.0]]))


def test_bootstrap_settings_must_match_the_partial_sums() -> None:
    fb = BanditFeedback(actions=np.array([0, 1, 0]), rewards=np.array([1.0, 0.0, 0.5]), propensities=np.full(3, 0.5))
    part = IPS().partial(fb, target=np.full((3, 2), 0.5), n_boot=10, seed=1)
    with pytest.raises(EstimatorInputError, match="pass n_boot and seed to partial"):
        IPS().finalize(part, inference=Bootstrap(n_replicates=10, seed=2))
    assert IPS().finalize(part, inference=Bootstrap(n_replicates=10, seed=1)).inference == "bootstrap"


@pytest.mark.parametrize("clip", [np.int64(5), np.float32(5.0), 5])
def test_numpy_numbers_are_valid_hyperparameters(clip: object) -> None:
    fb = BanditFeedback(actions=np.array([0, 1]), rewards=np.array([1.0, 0.0]), propensities=np.full(2, 0.5))
    assert IPS(clip=clip).estimate(fb, target=np.full((2, 2), 0.5)).value == pytest.approx(0.5)  # type: ignore[arg-type]


def test_auto_on_scalar_rewards_reports_a_float(rng: np.random.Generator) -> None:
    n = 500
    a = rng.integers(0, 2, n)
    fb = BanditFeedback(actions=a, rewards=rng.random(n), propensities=np.full(n, 0.5))
    est = IPS(clip="auto").estimate(fb, target=np.tile([0.9, 0.1], (n, 1)))
    assert isinstance(est.diagnostics.hyperparameter, float)
