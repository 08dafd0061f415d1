"""Intervals: delta-method standard errors against written-out formulas, the Poisson bootstrap and
its counter-based multipliers, and the empirical-Bernstein bound."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from estimators import DM, DR, IPS, SNDR, SNIPS, BanditFeedback, Bootstrap, DRos, EmpiricalBernstein, Normal, SwitchDR
from estimators.resample import poisson_multipliers, poisson_weight_sums


def simulate(rng: np.random.Generator, n: int, k: int = 4, metrics: int = 0) -> dict[str, np.ndarray]:
    """A stochastic logger, a different target, Bernoulli(0.3) (or (n, M) normal) rewards, a noisy q̂."""
    logging = rng.dirichlet(np.full(k, 3.0), size=n)
    actions = (logging.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    shape = (n,) if metrics == 0 else (n, metrics)
    rewards = rng.binomial(1, 0.3, size=shape).astype(float) if metrics == 0 else rng.normal(2.0, 1.0, size=shape)
    q_shape = (n, k) if metrics == 0 else (n, k, metrics)
    return {
        "actions": actions,
        "propensities": logging[np.arange(n), actions],
        "rewards": rewards,
        "logging": logging,
        "target": rng.dirichlet(np.full(k, 1.0), size=n),
        "q_hat": rng.uniform(0.0, 0.6, size=q_shape) if metrics == 0 else rng.normal(2.0, 0.5, size=q_shape),
    }


def feedback(d: dict[str, np.ndarray], **changes: object) -> BanditFeedback:
    fields = {"actions": d["actions"], "rewards": d["rewards"], "propensities": d["propensities"]}
    return BanditFeedback(**(fields | changes))  # type: ignore[arg-type]


def weights_of(d: dict[str, np.ndarray], policy: str = "target") -> np.ndarray:
    return d[policy][np.arange(len(d["actions"])), d["actions"]] / d["propensities"]


@pytest.fixture
def data(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return simulate(rng, 400)


# -- normal (delta-method) standard errors -----------------------------------------------------------


def test_ips_stderr_is_sample_sd_over_sqrt_n(data: dict[str, np.ndarray]) -> None:
    wr = weights_of(data) * data["rewards"]
    est = IPS().estimate(feedback(data), target=data["target"])
    assert est.stderr == pytest.approx(math.sqrt(np.var(wr, ddof=1) / 400), rel=1e-12)
    z = NormalDist().inv_cdf(0.975)
    assert est.ci_low == pytest.approx(est.value - z * est.stderr, rel=1e-12)
    assert est.ci_high == pytest.approx(est.value + z * est.stderr, rel=1e-12)


@pytest.mark.parametrize(
    ("estimator", "per_row"),
    [
        pytest.param(IPS(clip=2.0), lambda w, r, dm, qa: np.minimum(w, 2.0) * r, id="IPS-clip"),
        pytest.param(DM(), lambda w, r, dm, qa: dm, id="DM"),
        pytest.param(DR(), lambda w, r, dm, qa: dm + w * (r - qa), id="DR"),
        pytest.param(SwitchDR(threshold=1.5), lambda w, r, dm, qa: dm + (w <= 1.5) * w * (r - qa), id="SwitchDR"),
        pytest.param(DRos(shrinkage=1.0), lambda w, r, dm, qa: dm + w / (w**2 + 1) * (r - qa), id="DRos"),
    ],
)
def test_linear_estimators_stderr_is_sample_sd_of_per_row_values(
    data: dict[str, np.ndarray], estimator: IPS, per_row: object
) -> None:
    rows = np.arange(400)
    dm = (data["target"] * data["q_hat"]).sum(axis=1)
    x = per_row(weights_of(data), data["rewards"], dm, data["q_hat"][rows, data["actions"]])  # type: ignore[operator]
    est = estimator.estimate(feedback(data), target=data["target"], q_hat=data["q_hat"])
    assert est.value == pytest.approx(x.mean(), rel=1e-12)
    assert est.stderr == pytest.approx(math.sqrt(np.var(x, ddof=1) / 400), rel=1e-10)


@pytest.mark.parametrize(
    "offset",
    [
        0.0,
        1e3,  # e.g. latency in ms
        1e8,  # moments are centred, so a large offset does not cancel the variance away
    ],
)
def test_stderr_does_not_depend_on_a_reward_offset(rng: np.random.Generator, offset: float) -> None:
    # on-policy IPS: w = 1, so the stderr is the sample sd of r over sqrt(n), whatever its mean
    n = 2000
    logging = np.tile([0.5, 0.3, 0.2], (n, 1))
    actions = (logging.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    r = offset + rng.normal(size=n)
    fb = BanditFeedback(actions=actions, rewards=r, propensities=logging[np.arange(n), actions])
    est = IPS().estimate(fb, target=logging)
    assert est.stderr == pytest.approx(np.std(r, ddof=1) / math.sqrt(n), rel=1e-7)


def test_ips_stderr_with_multiple_metrics(rng: np.random.Generator) -> None:
    d = simulate(rng, 300, metrics=3)
    wr = weights_of(d)[:, None] * d["rewards"]
    est = IPS().estimate(feedback(d), target=d["target"])
    np.testing.assert_allclose(est.stderr, np.sqrt(np.var(wr, axis=0, ddof=1) / 300), rtol=1e-12)


def test_snips_delta_method_stderr(data: dict[str, np.ndarray]) -> None:
    # V = Σ w r / Σ w;  se² = Σ (w_i (r_i − V))² / (Σ w)² · n / (n − 1)
    w, r = weights_of(data), data["rewards"]
    v = (w * r).sum() / w.sum()
    est = SNIPS().estimate(feedback(data), target=data["target"])
    assert est.value == pytest.approx(v, rel=1e-12)
    assert est.stderr == pytest.approx(math.sqrt((w * (r - v)) ** 2 @ np.ones(400) / w.sum() ** 2 * 400 / 399), rel=1e-10)


def test_sndr_delta_method_stderr(data: dict[str, np.ndarray]) -> None:
    # V = mean(dm) + C with C = Σ w res / Σ w;  ψ_i = (dm_i − mean dm) + w_i (res_i − C) / mean(w)
    w = weights_of(data)
    dm = (data["target"] * data["q_hat"]).sum(axis=1)
    res = data["rewards"] - data["q_hat"][np.arange(400), data["actions"]]
    c = (w * res).sum() / w.sum()
    psi = (dm - dm.mean()) + w * (res - c) / w.mean()
    est = SNDR().estimate(feedback(data), target=data["target"], q_hat=data["q_hat"])
    assert est.value == pytest.approx(dm.mean() + c, rel=1e-12)
    assert est.stderr == pytest.approx(math.sqrt((psi**2).sum() / 400**2 * 400 / 399), rel=1e-10)


def test_ips_stderr_with_sample_weight(data: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    # value = Σ s x / Σ s;  se² = Σ s² (x − value)² / (Σ s)² · n / (n − 1)
    s = rng.uniform(0.5, 4.0, size=400)
    x = weights_of(data) * data["rewards"]
    v = (s * x).sum() / s.sum()
    est = IPS().estimate(feedback(data, sample_weight=s), target=data["target"])
    assert est.value == pytest.approx(v, rel=1e-12)
    assert est.stderr == pytest.approx(math.sqrt((s**2 * (x - v) ** 2).sum() / s.sum() ** 2 * 400 / 399), rel=1e-10)


def test_paired_difference_stderr(data: dict[str, np.ndarray]) -> None:
    # IPS difference: per-row x = (w_t − w_b) r; relative: ψ = 100 ((x_t − t) / b − t (x_b − b) / b²)
    xt = weights_of(data) * data["rewards"]
    xb = weights_of(data, "logging") * data["rewards"]
    t, b = xt.mean(), xb.mean()
    fb = feedback(data)
    diff = IPS().estimate_difference(fb, target=data["target"], baseline=data["logging"])
    rel = IPS().estimate_difference(fb, target=data["target"], baseline=data["logging"], relative=True)
    assert diff.stderr == pytest.approx(math.sqrt(np.var(xt - xb, ddof=1) / 400), rel=1e-10)
    psi = 100 * ((xt - t) / b - t * (xb - b) / b**2)
    assert rel.stderr == pytest.approx(math.sqrt((psi**2).sum() / 400**2 * 400 / 399), rel=1e-10)


@pytest.mark.parametrize(
    "inference", [Normal(), Bootstrap(n_replicates=400), EmpiricalBernstein()], ids=["normal", "bootstrap", "bernstein"]
)
def test_ci_at_any_level(data: dict[str, np.ndarray], inference: Normal) -> None:
    est = SNIPS().estimate(feedback(data), target=data["target"], inference=inference)
    assert est.ci(0.05) == (est.ci_low, est.ci_high)
    assert est.ci() == (est.ci_low, est.ci_high)
    widths = [np.subtract(*est.ci(a)[::-1]) for a in (0.01, 0.05, 0.1, 0.5)]
    assert widths[0] > widths[1] > widths[2] > widths[3] > 0
    assert est.inference == inference.name


def test_estimate_at_another_alpha_matches_ci(data: dict[str, np.ndarray]) -> None:
    est = DR().estimate(feedback(data), target=data["target"], q_hat=data["q_hat"])
    est90 = DR().estimate(feedback(data), target=data["target"], q_hat=data["q_hat"], alpha=0.1)
    assert est90.alpha == 0.1
    assert (est90.ci_low, est90.ci_high) == pytest.approx(est.ci(0.1), rel=1e-14)


# -- bootstrap --------------------------------------------------------------------------------------


@pytest.fixture
def big(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return simulate(rng, 5000)


@pytest.mark.parametrize("estimator", [IPS(), SNIPS(), DR(), SNDR()], ids=lambda e: e.name)
def test_bootstrap_stderr_close_to_normal(big: dict[str, np.ndarray], estimator: IPS) -> None:
    fb = feedback(big)
    kwargs = {"target": big["target"], "q_hat": big["q_hat"]}
    normal = estimator.estimate(fb, **kwargs)
    boot = estimator.estimate(fb, inference=Bootstrap(n_replicates=1000), **kwargs)
    assert boot.value == normal.value  # the interval strategy never changes the point estimate
    assert boot.stderr == pytest.approx(normal.stderr, rel=0.1)
    assert boot.ci_low == pytest.approx(normal.ci_low, abs=0.3 * normal.stderr)
    assert boot.ci_high == pytest.approx(normal.ci_high, abs=0.3 * normal.stderr)


def test_bootstrap_difference_stderr_close_to_normal(big: dict[str, np.ndarray]) -> None:
    fb = feedback(big)
    kwargs = {"target": big["target"], "baseline": big["logging"]}
    normal = SNIPS().estimate_difference(fb, **kwargs)
    boot = SNIPS().estimate_difference(fb, inference=Bootstrap(n_replicates=1000), **kwargs)
    assert boot.stderr == pytest.approx(normal.stderr, rel=0.1)


@pytest.mark.parametrize("estimator", [IPS(), SNIPS()], ids=lambda e: e.name)
def test_bootstrap_replicates_are_the_textbook_poisson_bootstrap(data: dict[str, np.ndarray], estimator: IPS) -> None:
    # replicate b: Σ P_bi w_i r_i / Σ P_bi (IPS) or / Σ P_bi w_i (SNIPS: the normalizer is recomputed)
    fb = feedback(data)
    boot = Bootstrap(n_replicates=200, seed=3)
    est = estimator.estimate(fb, target=data["target"], inference=boot)
    p = poisson_multipliers(fb.keys, np.arange(200), seed=3)
    w, r = weights_of(data), data["rewards"]
    expected = p @ (w * r) / (p @ (w if isinstance(estimator, SNIPS) else np.ones(400)))
    np.testing.assert_allclose(est.fit.replicates[:, 0], expected, rtol=1e-12)  # type: ignore[attr-defined]
    assert est.stderr == pytest.approx(np.std(expected, ddof=1), rel=1e-10)
    assert est.ci_low == pytest.approx(np.quantile(expected, 0.025), rel=1e-12)
    assert est.ci_high == pytest.approx(np.quantile(expected, 0.975), rel=1e-12)


@pytest.mark.parametrize("estimator", [IPS(), SNIPS(), DR()], ids=lambda e: e.name)
def test_bootstrap_does_not_depend_on_row_order(
    data: dict[str, np.ndarray], rng: np.random.Generator, estimator: IPS
) -> None:
    keys = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    fb = feedback(data, keys=keys)
    perm = rng.permutation(400)
    boot = Bootstrap(n_replicates=300)
    a = estimator.estimate(fb, target=data["target"], q_hat=data["q_hat"], inference=boot)
    b = estimator.estimate(fb.subset(perm), target=data["target"][perm], q_hat=data["q_hat"][perm], inference=boot)
    assert b.value == pytest.approx(a.value, rel=1e-12)
    assert (b.ci_low, b.ci_high, b.stderr) == pytest.approx((a.ci_low, a.ci_high, a.stderr), rel=1e-9)
    np.testing.assert_allclose(b.fit.replicates, a.fit.replicates, rtol=1e-9)  # type: ignore[attr-defined]


def test_bootstrap_is_deterministic_and_seeded(data: dict[str, np.ndarray]) -> None:
    fb = feedback(data)
    one = IPS().estimate(fb, target=data["target"], inference=Bootstrap(n_replicates=200))
    two = IPS().estimate(fb, target=data["target"], inference=Bootstrap(n_replicates=200))
    other = IPS().estimate(fb, target=data["target"], inference=Bootstrap(n_replicates=200, seed=1))
    assert (one.ci_low, one.ci_high, one.stderr) == (two.ci_low, two.ci_high, two.stderr)
    assert one.stderr != other.stderr


def test_bootstrap_with_multiple_metrics_and_missing_rewards(rng: np.random.Generator) -> None:
    d = simulate(rng, 2000, metrics=2)
    d["rewards"][rng.random(2000) < 0.3, 1] = np.nan
    fb = feedback(d)
    normal = SNIPS().estimate(fb, target=d["target"])
    boot = SNIPS().estimate(fb, target=d["target"], inference=Bootstrap(n_replicates=800))
    assert boot.stderr.shape == (2,)  # type: ignore[union-attr]
    np.testing.assert_allclose(boot.stderr, normal.stderr, rtol=0.15)


# -- Poisson(1) multipliers -------------------------------------------------------------------------


def test_poisson_multipliers_have_mean_and_variance_one() -> None:
    p = poisson_multipliers(np.arange(20_000, dtype=np.uint64), np.arange(50))
    assert p.shape == (50, 20_000)
    assert p.mean() == pytest.approx(1.0, abs=0.01)
    assert p.var() == pytest.approx(1.0, abs=0.01)
    for count in range(4):  # P(X = k) = e^-1 / k!
        assert (p == count).mean() == pytest.approx(math.exp(-1) / math.factorial(count), abs=0.005)
    # replicates are (nearly) uncorrelated with each other
    assert abs(np.corrcoef(p[0], p[1])[0, 1]) < 0.03


def test_poisson_multipliers_are_a_function_of_key_and_replicate(rng: np.random.Generator) -> None:
    keys = rng.integers(0, 2**63, size=500, dtype=np.uint64)
    perm = rng.permutation(500)
    full = poisson_multipliers(keys, np.arange(20))
    np.testing.assert_array_equal(poisson_multipliers(keys[perm], np.arange(20)), full[:, perm])
    np.testing.assert_array_equal(poisson_multipliers(keys, np.array([7, 3])), full[[7, 3]])
    assert not np.array_equal(poisson_multipliers(keys, np.arange(20), seed=1), full)


def test_poisson_weight_sums_do_not_depend_on_block_boundaries(rng: np.random.Generator) -> None:
    # 10 000 rows × 1000 replicates is more than one internal block; two halves must add up to the whole
    keys = rng.integers(0, 2**63, size=10_000, dtype=np.uint64)
    data = rng.normal(size=(10_000, 3))
    whole = poisson_weight_sums(keys, data, 1000, seed=5)
    halves = poisson_weight_sums(keys[:3_333], data[:3_333], 1000, seed=5) + poisson_weight_sums(
        keys[3_333:], data[3_333:], 1000, seed=5
    )
    np.testing.assert_allclose(whole, halves, rtol=1e-10, atol=1e-9)
    direct = poisson_multipliers(keys, np.arange(1000), seed=5) @ data
    np.testing.assert_allclose(whole, direct, rtol=1e-10, atol=1e-9)


# -- empirical Bernstein ----------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [IPS(), SNIPS(), DR()], ids=lambda e: e.name)
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_bernstein_interval_contains_the_normal_one(data: dict[str, np.ndarray], estimator: IPS, alpha: float) -> None:
    kwargs = {"target": data["target"], "q_hat": data["q_hat"], "alpha": alpha}
    normal = estimator.estimate(feedback(data), **kwargs)
    bern = estimator.estimate(feedback(data), inference=EmpiricalBernstein(), **kwargs)
    assert bern.value == normal.value
    assert bern.ci_low < normal.ci_low < normal.value < normal.ci_high < bern.ci_high


def test_bernstein_half_width_formula(data: dict[str, np.ndarray]) -> None:
    # Maurer & Pontil (2009), Thm 4, two-sided with δ = α/2 per side, on x = w r:
    #   half = sqrt(2 V ln(4/α) / n) + 7 R ln(4/α) / (3 (n − 1)),  V = sample variance, R = max x − min x
    x = weights_of(data) * data["rewards"]
    log_term = math.log(4 / 0.05)
    half = math.sqrt(2 * np.var(x, ddof=1) * log_term / 400) + 7 * (x.max() - x.min()) * log_term / (3 * 399)
    est = IPS().estimate(feedback(data), target=data["target"], inference=EmpiricalBernstein())
    assert est.ci_low == pytest.approx(x.mean() - half, rel=1e-10)
    assert est.ci_high == pytest.approx(x.mean() + half, rel=1e-10)
