"""Mean corrections of out-of-fold predictions: per-arm smearing factors shrunk toward the pooled one, the pooled logit
shift, and their application, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from ope.models.corrections import PRIOR_ROWS, apply_correction, mean_correction


def test_smearing_factor_is_per_arm_and_shrunk_toward_the_pooled_one() -> None:
    # residuals exp(y - raw): arm 0 sees 1 and 3 (own factor 2), arm 1 sees 1 (own factor 1), arm 2 is never logged
    raw = np.zeros(3)
    y = np.log(np.array([1.0, 3.0, 1.0]))
    arms = np.array([0, 0, 1])
    got = mean_correction("log", raw, y, np.ones(3), arms, 3)
    pooled = 5 / 3
    want = [(2 * 2 + PRIOR_ROWS * pooled) / (2 + PRIOR_ROWS), (1 * 1 + PRIOR_ROWS * pooled) / (1 + PRIOR_ROWS), pooled]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_smearing_factor_weighs_rows_by_sample_weight_not_by_its_scale() -> None:
    rng = np.random.default_rng(0)
    raw, y, arms = rng.normal(size=500), rng.normal(size=500), rng.integers(0, 4, size=500)
    w = rng.uniform(0.5, 2.0, size=500)
    one = mean_correction("log", raw, y, w, arms, 4)
    np.testing.assert_allclose(mean_correction("log", raw, y, 10 * w, arms, 4), one, rtol=1e-12)  # a 10 % sample's weights
    # an arm logged far more often than PRIOR_ROWS keeps about its own factor
    many = np.zeros(100_000, dtype=np.int64)
    resid = np.where(np.arange(100_000) % 2 == 0, np.log(1.0), np.log(3.0))
    assert mean_correction("log", np.zeros(100_000), resid, np.ones(100_000), many, 1)[0] == pytest.approx(2.0, rel=1e-12)


def test_logit_shift_is_one_for_every_arm_and_matches_the_observed_rate() -> None:
    rng = np.random.default_rng(1)
    raw = rng.normal(2.0, 1.0, size=2_000)
    y = (rng.uniform(size=2_000) < 0.8).astype(np.float64)
    arms = rng.integers(0, 3, size=2_000)
    got = mean_correction("binary", raw, y, np.ones(2_000), arms, 3)
    assert got[0] == got[1] == got[2]
    assert expit(raw + got[0]).mean() == pytest.approx(y.mean(), abs=1e-9)


def test_corrections_apply_per_arm_and_a_single_number_from_an_older_manifest() -> None:
    raw, arms = np.log(np.array([2.0, 4.0, 8.0])), np.array([1, 0, 1])
    np.testing.assert_allclose(apply_correction("log", raw, [1.5, 1.25], arms), [1.25 * 2 - 1, 1.5 * 4 - 1, 1.25 * 8 - 1])
    np.testing.assert_allclose(apply_correction("log", raw, 1.5, arms), [1.5 * 2 - 1, 1.5 * 4 - 1, 1.5 * 8 - 1])
    np.testing.assert_allclose(apply_correction("binary", np.zeros(3), [0.0, np.log(3.0)], arms), [0.75, 0.5, 0.75])
