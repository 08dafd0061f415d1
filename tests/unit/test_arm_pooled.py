"""The arm-pooled variance of DR and its kin: against hand-computed values and a written-out formula, and as a
mergeable reduction (batches, the one-pass combined accumulation)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from estimators import (
    DR,
    IPS,
    SNIPS,
    ArmPooled,
    BanditFeedback,
    DRos,
    EstimatorInputError,
    SkewCorrected,
    SwitchDR,
    evaluate_all,
)
from estimators.armpooled import PRIOR_ROWS, ArmPooledFit

Z = NormalDist().inv_cdf(0.975)
pytestmark = pytest.mark.filterwarnings("ignore::estimators.SupportWarning")  # six-row logs, on purpose


def test_hand_computed_interval_of_six_rows() -> None:
    # uniform logger over 2 arms, target always arm 0 (w = 2 there, 0 on arm 1), q̂ = 2 on arm 0 and 1 on arm 1:
    # DM = 2 on every row; residuals arm 0: -1, 1, 0, arm 1: 0, 0, 3; DR terms 0, 4, 2, 2, 2, 2, mean 2
    fb = BanditFeedback(actions=np.array([0, 0, 0, 1, 1, 1]), rewards=np.array([1.0, 3.0, 2.0, 1.0, 1.0, 4.0]),
                        propensities=np.full(6, 0.5), n_arms=2)
    q = np.tile([2.0, 1.0], (6, 1))
    est = DR().estimate(fb, target=np.tile([1.0, 0.0], (6, 1)), q_hat=q, inference=ArmPooled())
    v_emp = 8 / 36 * 6 / 5                              # Σ (ψ − 2)² = 4 + 4, over n², times n / (n − 1)
    overall = 11 / 6                                    # (1 + 1 + 0 + 0 + 0 + 9) / 6
    sigma0 = (2 + PRIOR_ROWS * overall) / (3 + PRIOR_ROWS)   # arm 0: Σ ε² = 2 over 3 rows, shrunk by 100 pseudo-rows
    k2 = sigma0 * 3 * 2**2                              # DM − θ = 0 on every row; Σ w² = 12 on arm 0, 0 on arm 1
    v_arm = k2 / 36 * 6 / 5
    assert v_arm > v_emp
    # Cornish–Fisher: Σ ε³ is 0 on arm 0 and 27 on arm 1, 27 / 6 over all rows; arm 0's shrunk mean cubed residual
    mu3 = (0 + PRIOR_ROWS * 27 / 6) / (3 + PRIOR_ROWS)
    kappa = mu3 * 3 * 2**3 / k2**1.5                    # Σ w³ = 24 on arm 0; no DM terms
    # cov(Σ w ε, Σ_k σ̂²_k Σ w²) = Σ w² on arm 0 (12) × (Σ w on arm 0 (6) + 100 · 6 / 6) × μ3 / 103
    c = 12 * (6 + PRIOR_ROWS * 6 / 6) * mu3 / (3 + PRIOR_ROWS) / k2**1.5
    move = -c / 2 + (kappa - 3 * c) * (Z * Z - 1) / 6
    se = math.sqrt(v_arm)
    assert est.value == pytest.approx(2.0, rel=1e-12)
    assert est.stderr == pytest.approx(se, rel=1e-12)
    assert (est.ci_low, est.ci_high) == pytest.approx((2 - se * (Z + move), 2 + se * (Z - move)), rel=1e-12)
    assert -Z < move < 0                                # c outweighs κ on three rows: moved up, still holding the estimate
    assert est.inference == "arm-pooled"


def test_a_skew_beyond_the_expansion_moves_the_interval_no_further_than_to_the_estimate() -> None:
    # the target weighs three rows of arm 0; the 100 of arm 1 hold one residual of 50, so every arm's shrunk third
    # moment is large next to its spread: a skewness the two-term expansion cannot be trusted with
    rewards = np.concatenate([[1.0, 3.0, 2.0], np.ones(100)])
    rewards[-1] = 51.0
    fb = BanditFeedback(actions=np.repeat([0, 1], [3, 100]), rewards=rewards, propensities=np.full(103, 0.5), n_arms=2)
    q = np.tile([2.0, 1.0], (103, 1))
    est = DR().estimate(fb, target=np.tile([1.0, 0.0], (103, 1)), q_hat=q, inference=ArmPooled())
    fit = est.fit
    assert isinstance(fit, ArmPooledFit)
    assert -fit.bias[0] / 2 + fit.skew[0] * (Z * Z - 1) / 6 > Z   # the expansion's own move, in standard errors
    assert est.ci_high == pytest.approx(est.value, rel=1e-12)
    assert est.ci_low == pytest.approx(est.value - 2 * Z * est.stderr, rel=1e-12)


def _log(rng: np.random.Generator, n: int = 3000, k: int = 5, m: int = 3) -> tuple[BanditFeedback, np.ndarray, np.ndarray, np.ndarray]:
    """A heavy-tailed log with missing outcomes and sample weights, two targets and a q̂ that is off per arm."""
    logger = rng.dirichlet(np.full(k, 2.0), size=n)
    a = (logger.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    r = rng.lognormal(0.0, 1.0, size=(n, m)) * (1 + a[:, None])
    r[rng.random((n, m)) < 0.05] = np.nan
    fb = BanditFeedback(actions=a, rewards=r, propensities=logger[np.arange(n), a], n_arms=k,
                        sample_weight=rng.uniform(0.5, 2.0, n), keys=rng.integers(0, 2**63, size=n).astype(np.uint64))
    q = np.broadcast_to(np.nanmean(r, axis=0), (n, k, m)) * rng.uniform(0.8, 1.2, (1, k, 1))
    return fb, rng.dirichlet(np.ones(k), size=n), rng.dirichlet(np.ones(k), size=n), q


def _observed(fb: BanditFeedback, q: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Metric j's row weights W (the sample weight where the outcome is observed, else 0) and residuals ε (0 where not)."""
    seen = ~np.isnan(fb.rewards[:, j])
    return fb.sample_weight * seen, np.where(seen, fb.rewards[:, j] - q[np.arange(fb.n), fb.actions, j], 0.0)


def _shrunk(big_w: np.ndarray, x: np.ndarray, on: np.ndarray) -> float:
    """The W-weighted mean of x over the rows ``on``, shrunk toward the all-row one by PRIOR_ROWS pseudo-rows."""
    return ((big_w * x)[on].sum() + PRIOR_ROWS * (big_w * x).sum() / big_w.sum()) / (big_w[on].sum() + PRIOR_ROWS)


def _written_out(fb: BanditFeedback, q: np.ndarray, w_t: np.ndarray, w_b: np.ndarray, pi: np.ndarray, base: np.ndarray
                 ) -> np.ndarray:
    """The difference's arm-pooled standard error, arm by arm and metric by metric."""
    k, m = q.shape[1:]
    out = np.empty(m)
    for j in range(m):
        big_w, eps = _observed(fb, q, j)
        dm = (pi * q[:, :, j]).sum(1) - (base * q[:, :, j]).sum(1)
        w = w_t - w_b
        psi = dm + w * eps
        theta = (big_w * psi).sum() / big_w.sum()
        quad = (big_w**2 * (dm - theta) ** 2).sum()
        for arm in range(k):
            on = fb.actions == arm
            quad += _shrunk(big_w, eps**2, on) * (big_w[on] ** 2 * w[on] ** 2).sum()
        count = (big_w > 0).sum()
        v_arm = quad / big_w.sum() ** 2 * count / (count - 1)
        v_emp = (big_w**2 * (psi - theta) ** 2).sum() / big_w.sum() ** 2 * count / (count - 1)
        out[j] = math.sqrt(max(v_arm, v_emp))
    return out


def _written_out_move(fb: BanditFeedback, q: np.ndarray, w: np.ndarray, dm: np.ndarray) -> np.ndarray:
    """The Cornish–Fisher move −c/2 + (κ − 3c)(z² − 1)/6 (M,) of the statistic with DR terms dm + w ε, arm by arm."""
    k, m = q.shape[1:]
    out = np.empty(m)
    for j in range(m):
        big_w, eps = _observed(fb, q, j)
        d = dm[:, j] - (big_w * (dm[:, j] + w * eps)).sum() / big_w.sum()
        k2, k3 = (big_w**2 * d**2).sum(), (big_w**3 * d**3).sum()
        cov_emp, cov_pool = 0.0, 0.0
        lin_mu3 = sum((big_w**2 * w)[fb.actions == a].sum() * _shrunk(big_w, eps**3, fb.actions == a) for a in range(k))
        for arm in range(k):
            on = fb.actions == arm
            sigma2, mu3 = _shrunk(big_w, eps**2, on), _shrunk(big_w, eps**3, on)
            gram = (big_w[on] ** 2 * w[on] ** 2).sum()
            k2 += sigma2 * gram
            k3 += 3 * sigma2 * (big_w[on] ** 3 * d[on] * w[on] ** 2).sum() + mu3 * (big_w[on] ** 3 * w[on] ** 3).sum()
            # cov(Σ W w ε, σ̂²_arm): its own rows' Σ W ε², and the all-arm mean it is shrunk toward
            cov_emp += gram * (big_w[on] ** 2 * w[on]).sum() * mu3 / (big_w[on].sum() + PRIOR_ROWS)
            cov_pool += gram * PRIOR_ROWS / (big_w[on].sum() + PRIOR_ROWS) * lin_mu3 / big_w.sum()
        kappa, c = k3 / k2**1.5, (cov_emp + cov_pool) / k2**1.5
        out[j] = -c / 2 + (kappa - 3 * c) * (Z * Z - 1) / 6
    return out


@pytest.mark.parametrize("estimator", [DR(), SwitchDR(threshold=4.0), DRos(shrinkage=10.0)], ids=lambda e: e.name)
def test_paired_difference_matches_the_written_out_formula(estimator: DR, rng: np.random.Generator) -> None:
    fb, pi, base, q = _log(rng)
    rows = np.arange(fb.n)
    w_t, w_b = (estimator._weight(p[rows, fb.actions] / fb.propensities, estimator._setting()) for p in (pi, base))  # type: ignore[attr-defined]
    est = estimator.estimate_difference(fb, target=pi, baseline=base, q_hat=q, inference=ArmPooled())
    np.testing.assert_allclose(est.stderr, _written_out(fb, q, w_t, w_b, pi, base), rtol=1e-10)
    move = _written_out_move(fb, q, w_t - w_b, np.einsum("ik,ikm->im", pi - base, q))
    assert np.abs(move).max() < Z and np.abs(move).min() > 1e-3        # moved, within the estimate's reach
    np.testing.assert_allclose(est.ci_low, est.value - est.stderr * (Z + move), rtol=1e-10)
    np.testing.assert_allclose(est.ci_high, est.value + est.stderr * (Z - move), rtol=1e-10)
    assert est.inference == "arm-pooled"
    alone = estimator.estimate(fb, target=pi, q_hat=q, inference=ArmPooled())
    move = _written_out_move(fb, q, w_t, np.einsum("ik,ikm->im", pi, q))
    np.testing.assert_allclose(alone.ci_low, alone.value - alone.stderr * (Z + move), rtol=1e-10)


def test_batches_and_the_one_pass_accumulation_give_the_same_interval(rng: np.random.Generator) -> None:
    fb, pi, base, q = _log(rng)
    whole = DR().estimate_difference(fb, target=pi, baseline=base, q_hat=q, inference=ArmPooled())
    cut = fb.n // 3
    parts = [DR().partial(fb.subset(np.arange(lo, hi)), target=pi[lo:hi], baseline=base[lo:hi], q_hat=q[lo:hi], arm_sums=True)
             for lo, hi in ((0, cut), (cut, fb.n))]
    merged = DR().finalize(parts[0] + parts[1], inference=ArmPooled())
    np.testing.assert_allclose(merged.stderr, whole.stderr, rtol=1e-12)
    together = evaluate_all(fb, target=pi, baseline=base, q_hat=q, estimators=[IPS(), DR()], inference=ArmPooled())
    np.testing.assert_allclose(together["DR"].stderr, whole.stderr, rtol=1e-12)
    np.testing.assert_allclose(together["DR"].ci_low, whole.ci_low, rtol=1e-12)


def test_estimators_of_another_form_get_the_skew_corrected_interval_and_say_so(rng: np.random.Generator) -> None:
    fb, pi, _, q = _log(rng)
    for estimator in (IPS(), SNIPS(), DRos(shrinkage="auto")):
        got = estimator.estimate(fb, target=pi, q_hat=q, inference=ArmPooled())
        want = estimator.estimate(fb, target=pi, q_hat=q, inference=SkewCorrected())
        assert got.inference == "skew-corrected", estimator.name
        np.testing.assert_allclose(got.ci_low, want.ci_low, rtol=1e-12)


def test_relative_change_has_a_finite_interval(rng: np.random.Generator) -> None:
    fb, pi, base, q = _log(rng)
    est = DR().estimate_difference(fb, target=pi, baseline=base, q_hat=q, inference=ArmPooled(), relative=True)
    assert np.isfinite(est.ci_low).all() and np.isfinite(est.ci_high).all() and (est.ci_low < est.value).all()


def test_sums_without_the_arm_sums_are_refused_not_silently_widened(rng: np.random.Generator) -> None:
    fb, pi, _, q = _log(rng, n=300)
    bare = DR().partial(fb, target=pi, q_hat=q)
    assert bare.sums.pooled is None  # not accumulated unless asked: their cost is test_dr_arm_pooled's ratio (tests/benchmarks)
    with pytest.raises(EstimatorInputError, match="arm-pooled needs the per-arm sums: pass arm_sums=True"):
        DR().finalize(bare, inference=ArmPooled())
    with pytest.raises(EstimatorInputError, match="same estimator, statistic, bootstrap and arm sums"):
        _ = bare + DR().partial(fb, target=pi, q_hat=q, arm_sums=True)


def test_a_run_uses_it_by_default_and_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ope.config import load_config
    from ope.evaluation.plan import build_inference, interval_methods

    path = tmp_path / "run.toml"
    path.write_text('[data]\nlogs = "logs.parquet"\ncatalog = "catalog.csv"\n[[policies]]\nname = "direct_official"\n'
                    'kind = "direct_official"\n')
    cfg = load_config(path)
    assert isinstance(build_inference(cfg), ArmPooled)
    method = interval_methods(cfg)["estimates"]
    assert method.startswith("the larger of the empirical and the arm-pooled variance") and "Cornish–Fisher" in method
