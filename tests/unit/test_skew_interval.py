"""The skew-corrected interval (Hall, 1992): its skewness against written-out formulas, its bounds
against the normal interval, and its third moments as a mergeable reduction."""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from estimators import DR, IPS, SNIPS, BanditFeedback, DRos, Normal, SkewCorrected, SwitchDR
from estimators.base import BaseEstimator

Z = NormalDist().inv_cdf(0.975)
pytestmark = pytest.mark.filterwarnings("ignore::estimators.SupportWarning")  # five- and six-row logs, on purpose


def hall_t(u: float, kappa: float) -> float:
    """Written out: the t with t + κt²/3 + κ²t³/27 + κ/6 = u."""
    return 3 * (np.cbrt(1 + kappa * (u - kappa / 6)) - 1) / kappa


def on_policy(rewards: list[float]) -> tuple[BanditFeedback, np.ndarray]:
    """A log whose target is its logger (every importance weight 1): IPS is the sample mean."""
    n = len(rewards)
    fb = BanditFeedback(actions=np.zeros(n, dtype=int), rewards=np.array(rewards), propensities=np.full(n, 0.5), n_arms=2)
    return fb, np.full((n, 2), 0.5)


def skewed(rng: np.random.Generator, n: int = 1500, k: int = 4, m: int = 2) -> tuple[BanditFeedback, np.ndarray, np.ndarray, np.ndarray]:
    logger = rng.dirichlet(np.full(k, 2.0), size=n)
    a = (logger.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    r = rng.lognormal(0.0, 1.2, size=(n, m)) * (1 + a[:, None])
    keys = rng.integers(0, 2**63, size=n).astype(np.uint64)
    fb = BanditFeedback(actions=a, rewards=r, propensities=logger[np.arange(n), a], keys=keys, n_arms=k)
    q = np.broadcast_to(r.mean(axis=0), (n, k, m)).copy()
    return fb, rng.dirichlet(np.ones(k), size=n), rng.dirichlet(np.ones(k), size=n), q


def test_hand_computed_interval_of_five_rewards() -> None:
    # mean 4, deviations -3 -2 -1 0 6: Σd² = 50, Σd³ = 180
    fb, pi = on_policy([1.0, 2.0, 3.0, 4.0, 10.0])
    est = IPS().estimate(fb, target=pi, inference=SkewCorrected())
    k2, k3 = 50 * 5 / 4, 180 * 25 / (4 * 3)          # unbiased cumulant factors n/(n-1), n²/((n-1)(n-2))
    kappa = k3 / k2**1.5                              # 0.7589...
    se = math.sqrt(50 / 25 * 5 / 4)
    assert est.fit.skew[0] == pytest.approx(kappa, rel=1e-12)
    assert est.stderr == pytest.approx(se, rel=1e-12)
    assert est.ci_low == pytest.approx(4 - se * max(hall_t(Z, kappa), Z), rel=1e-12)
    assert est.ci_high == pytest.approx(4 - se * min(hall_t(-Z, kappa), -Z), rel=1e-12)
    assert est.ci_high - 4 > 4 - est.ci_low  # a right-skewed mean reaches further up
    assert est.inference == "skew-corrected"


def test_skewness_is_the_sample_skewness_over_root_n(rng: np.random.Generator) -> None:
    n = 2000
    fb, pi, _, _ = skewed(rng, n=n, m=1)
    r = fb.rewards[:, 0]
    fb = BanditFeedback(actions=fb.actions, rewards=r, propensities=fb.propensities, n_arms=4)
    est = IPS().estimate(fb, target=pi, inference=SkewCorrected())
    x = pi[np.arange(n), fb.actions] / fb.propensities * r
    assert est.fit.skew[0] == pytest.approx(stats.skew(x, bias=False) / math.sqrt(n), rel=1e-9)


def test_symmetric_rewards_give_the_normal_interval() -> None:
    fb, pi = on_policy([1.0, 2.0, 3.0, 5.0, 6.0, 7.0])
    skew, normal = (IPS().estimate(fb, target=pi, inference=inf) for inf in (SkewCorrected(), Normal()))
    assert skew.fit.skew[0] == pytest.approx(0.0, abs=1e-12)
    assert (skew.ci_low, skew.ci_high) == pytest.approx((normal.ci_low, normal.ci_high), rel=1e-12)


@pytest.mark.parametrize("estimator", [IPS(), SNIPS(), DR()], ids=lambda e: e.name)
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_never_inside_the_normal_interval(rng: np.random.Generator, estimator: BaseEstimator, alpha: float) -> None:
    fb, target, baseline, q = skewed(rng)
    for kind in ("value", "difference"):
        base = None if kind == "value" else baseline
        part = estimator.partial(fb, target=target, baseline=base, q_hat=q)
        skew, normal = (estimator.finalize(part, inference=inf, alpha=alpha) for inf in (SkewCorrected(), Normal()))
        assert (skew.ci_low <= normal.ci_low + 1e-15).all() and (skew.ci_high >= normal.ci_high - 1e-15).all()
        if kind == "value":
            assert (skew.fit.skew > 0.01).all()  # right-skewed rewards: the correction is live
        np.testing.assert_array_equal(skew.value, normal.value)
        np.testing.assert_array_equal(skew.stderr, normal.stderr)


@pytest.mark.parametrize("estimator", [SNIPS(), DR(), SwitchDR(threshold="auto"), DRos(shrinkage="auto")], ids=repr)
def test_batches_merge_to_the_whole(rng: np.random.Generator, estimator: BaseEstimator) -> None:
    fb, target, baseline, q = skewed(rng)
    whole = estimator.estimate_difference(fb, target=target, baseline=baseline, q_hat=q, inference=SkewCorrected())
    total = None
    for lo, hi in ((900, 1500), (0, 250), (250, 900)):
        rows = np.arange(lo, hi)
        part = estimator.partial(fb.subset(rows), target=target[rows], baseline=baseline[rows], q_hat=q[rows])
        total = part if total is None else total + part
    assert total is not None
    merged = estimator.finalize(total, inference=SkewCorrected())
    np.testing.assert_allclose(merged.fit.skew, whole.fit.skew, rtol=1e-9)
    for field in ("ci_low", "ci_high"):
        np.testing.assert_allclose(getattr(merged, field), getattr(whole, field), rtol=1e-9, atol=1e-12)


def test_sums_without_third_moments_are_refused(rng: np.random.Generator) -> None:
    fb, target, _, _ = skewed(rng, n=200)
    part = IPS().partial(fb, target=target)
    bare = dataclasses.replace(part, sums=dataclasses.replace(part.sums, third=None))
    with pytest.raises(ValueError, match="without the third moments a skew-corrected interval needs"):
        IPS().finalize(bare, inference=SkewCorrected())


def test_a_run_asking_for_skew_uses_it_and_names_every_interval_method(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ope.config import load_config
    from ope.errors import ConfigError
    from ope.evaluation.plan import build_inference, interval_methods

    path = tmp_path / "run.toml"
    path.write_text('[data]\nlogs = "logs.parquet"\ncatalog = "catalog.csv"\n[[policies]]\nname = "direct_official"\n'
                    'kind = "direct_official"\n[evaluation]\ninference = "skew"\n')
    cfg = load_config(path)
    assert isinstance(build_inference(cfg), SkewCorrected)
    assert interval_methods(cfg)["estimates"].startswith("skew-corrected normal (Hall 1992")
    assert set(interval_methods(cfg)) == {"estimates", "breakdowns", "certificates"}
    path.write_text(path.read_text().replace('"skew"', '"studentized"'))
    with pytest.raises(ConfigError, match="inference must be skew, normal, arm-pooled, bootstrap or bernstein. Got 'studentized'"):
        build_inference(load_config(path))
