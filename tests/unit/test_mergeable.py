"""Estimates are mergeable reductions: whole, in uneven batches, in any order — the same numbers."""

from __future__ import annotations

import numpy as np
import pytest

from estimators import ESTIMATORS, BanditFeedback, Bootstrap, EmpiricalBernstein, Normal, SkewCorrected
from estimators.base import BaseEstimator

pytestmark = pytest.mark.slow  # Hypothesis over every estimator × interval: run in CI


def _log(rng: np.random.Generator, n: int = 100_000, k: int = 8, m: int = 3):
    logger = rng.dirichlet(np.ones(k) * 2, size=n)
    a = (logger.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    means = rng.random((k, m))
    r = means[a] + rng.normal(0, 0.3, (n, m))
    r[rng.random(n) < 0.1, 1] = np.nan  # a metric with missing values
    q = means[None, :, :] + rng.normal(0, 0.05, (n, k, m))
    target = rng.dirichlet(np.ones(k), size=n)
    baseline = rng.dirichlet(np.ones(k), size=n)
    sw = rng.choice([1.0, 2.0, 5.0], size=n)
    keys = rng.integers(0, 2**63, size=n).astype(np.uint64)
    fb = BanditFeedback(actions=a, rewards=r, propensities=logger[np.arange(n), a], sample_weight=sw, keys=keys, n_arms=k)
    return fb, target, baseline, q


def _settings() -> list[BaseEstimator]:
    out = [cls() for cls in ESTIMATORS.values()]
    out += [ESTIMATORS["IPS"](clip="auto"), ESTIMATORS["SwitchDR"](threshold="auto"), ESTIMATORS["DRos"](shrinkage="auto")]
    return out


@pytest.mark.parametrize("estimator", _settings(), ids=repr)
@pytest.mark.parametrize("inference", [Normal(), SkewCorrected(), EmpiricalBernstein(), Bootstrap(n_replicates=64)], ids=lambda i: i.name)
def test_batches_in_any_order_give_the_same_estimate(estimator: BaseEstimator, inference, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    fb, target, baseline, q = _log(rng, n=30_000)
    whole = estimator.estimate_difference(fb, target=target, baseline=baseline, q_hat=q, inference=inference)
    cuts = np.sort(rng.choice(np.arange(1, fb.n), size=36, replace=False))
    bounds = list(zip(np.r_[0, cuts], np.r_[cuts, fb.n], strict=True))
    rng.shuffle(bounds)
    total = None
    for lo, hi in bounds:
        rows = np.arange(lo, hi)
        part = estimator.partial(fb.subset(rows), target=target[rows], baseline=baseline[rows], q_hat=q[rows],
                                 n_boot=inference.n_boot, seed=inference.seed)
        total = part if total is None else total + part
    merged = estimator.finalize(total, inference=inference)
    for field in ("value", "stderr", "ci_low", "ci_high", "n"):
        np.testing.assert_allclose(getattr(merged, field), getattr(whole, field), rtol=1e-9, atol=1e-12, err_msg=field)
    assert merged.diagnostics.hyperparameter == whole.diagnostics.hyperparameter
    assert merged.ess == pytest.approx(whole.ess, rel=1e-9)


def test_bootstrap_does_not_depend_on_row_order(rng: np.random.Generator) -> None:
    fb, target, _, q = _log(rng, n=5000)
    perm = rng.permutation(fb.n)
    shuffled = fb.subset(perm)
    boot = Bootstrap(n_replicates=200)
    a = ESTIMATORS["SNIPS"]().estimate(fb, target=target, inference=boot)
    b = ESTIMATORS["SNIPS"]().estimate(shuffled, target=target[perm], inference=boot)
    np.testing.assert_allclose(a.fit.replicates, b.fit.replicates, rtol=1e-9)  # type: ignore[attr-defined]
