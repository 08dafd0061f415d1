"""Properties every estimator must have: Hypothesis properties of the point estimates, and one
contract suite run over every class in `estimators.ESTIMATORS`."""

from __future__ import annotations

import dataclasses
import inspect
import json

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators import DM, DR, ESTIMATORS, IPS, SNDR, SNIPS, BanditFeedback, Bootstrap, DRos, Estimate, Normal, SwitchDR

PROPERTY = settings(max_examples=50, deadline=None)
QUIET = pytest.mark.filterwarnings("ignore::estimators.SupportWarning")  # overlap warnings are not the point here
MODEL_BASED = [DM(), DR(), SNDR(), SwitchDR(), SwitchDR(threshold=1.5), DRos(), DRos(shrinkage=2.0)]


# -- strategies -----------------------------------------------------------------------------------

probabilities = st.floats(min_value=0.02, max_value=1.0, allow_subnormal=False)
reward_values = st.floats(min_value=-10.0, max_value=10.0, allow_subnormal=False)


@st.composite
def logs(draw: st.DrawFn, *, min_n: int = 2, max_n: int = 25) -> dict[str, np.ndarray | None]:
    """A small log: logging distribution (n, K) with full support, logged actions and their
    propensities, a target that may put zero mass on unlogged arms, rewards and optional sample weights."""
    n = draw(st.integers(min_n, max_n))
    k = draw(st.integers(2, 5))
    logging = draw(hnp.arrays(np.float64, (n, k), elements=probabilities))
    logging /= logging.sum(axis=1, keepdims=True)
    actions = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    target = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(0.0, 1.0, allow_subnormal=False)))
    target[np.arange(n), actions] += 1e-3  # some mass on every logged action, so Σ w > 0
    target /= target.sum(axis=1, keepdims=True)
    sample_weight = draw(st.none() | hnp.arrays(np.float64, n, elements=st.floats(0.1, 10.0)))
    return {
        "actions": actions,
        "logging": logging,
        "propensities": logging[np.arange(n), actions],
        "target": target,
        "rewards": draw(hnp.arrays(np.float64, n, elements=reward_values)),
        "sample_weight": sample_weight,
    }


def feedback(d: dict[str, np.ndarray | None], **changes: object) -> BanditFeedback:
    fields = {key: d[key] for key in ("actions", "rewards", "propensities", "sample_weight")}
    n_arms = d["logging"].shape[1]  # type: ignore[union-attr]
    return BanditFeedback(**(fields | {"n_arms": n_arms} | changes))  # type: ignore[arg-type]


def weighted_mean(x: np.ndarray, s: np.ndarray | None) -> float:
    return float(np.average(x, weights=s))


# -- Hypothesis properties --------------------------------------------------------------------------


@QUIET
@PROPERTY
@given(logs())
def test_on_policy_ips_is_the_sample_mean(d: dict[str, np.ndarray]) -> None:
    est = IPS().estimate(feedback(d), target=d["logging"])
    assert est.value == pytest.approx(weighted_mean(d["rewards"], d["sample_weight"]), rel=1e-12, abs=1e-12)
    assert est.diagnostics.mean_weight == pytest.approx(1.0, rel=1e-14)


@QUIET
@PROPERTY
@given(logs())
def test_snips_stays_within_the_rewards(d: dict[str, np.ndarray]) -> None:
    w = d["target"][np.arange(len(d["actions"])), d["actions"]]
    r = d["rewards"][w > 0]  # rows the target gives no weight cannot pull the estimate
    value = SNIPS().estimate(feedback(d), target=d["target"]).value
    assert r.min() - 1e-9 <= value <= r.max() + 1e-9


@QUIET
@PROPERTY
@given(logs(), reward_values)
def test_constant_reward_is_estimated_exactly(d: dict[str, np.ndarray], c: float) -> None:
    n, k = d["target"].shape
    fb = feedback(d, rewards=np.full(n, c))
    q = np.full((n, k), c)
    assert SNIPS().estimate(fb, target=d["target"]).value == pytest.approx(c, rel=1e-12, abs=1e-12)
    assert IPS().estimate(fb, target=d["logging"]).value == pytest.approx(c, rel=1e-12, abs=1e-12)
    for estimator in MODEL_BASED:
        assert estimator.estimate(fb, target=d["target"], q_hat=q).value == pytest.approx(c, rel=1e-12, abs=1e-12)


@QUIET
@PROPERTY
@given(logs(), st.data())
def test_dr_family_equals_dm_when_q_hat_is_exact(d: dict[str, np.ndarray], data: st.DataObject) -> None:
    # rewards deterministic per arm, r_i = μ(a_i), and q̂(x, a) = μ(a): the correction term vanishes
    n, k = d["target"].shape
    mu = data.draw(hnp.arrays(np.float64, k, elements=reward_values))
    fb = feedback(d, rewards=mu[d["actions"]])
    q = np.tile(mu, (n, 1))
    dm = DM().estimate(fb, target=d["target"], q_hat=q).value
    for estimator in MODEL_BASED:
        assert estimator.estimate(fb, target=d["target"], q_hat=q).value == pytest.approx(dm, rel=1e-12, abs=1e-12)


@QUIET
@PROPERTY
@given(logs())
def test_dr_equals_ips_when_q_hat_is_zero(d: dict[str, np.ndarray]) -> None:
    fb = feedback(d)
    q = np.zeros(d["target"].shape)
    ips = IPS().estimate(fb, target=d["target"])
    snips = SNIPS().estimate(fb, target=d["target"])
    for estimator in (DR(), SwitchDR(), DRos()):
        assert estimator.estimate(fb, target=d["target"], q_hat=q).value == pytest.approx(ips.value, rel=1e-12, abs=1e-12)
    assert SNDR().estimate(fb, target=d["target"], q_hat=q).value == pytest.approx(snips.value, rel=1e-12, abs=1e-12)
    # … and their intervals agree too (same per-row terms)
    assert DR().estimate(fb, target=d["target"], q_hat=q).stderr == pytest.approx(ips.stderr, rel=1e-9, abs=1e-12)


def simulated(seed: int, n: int) -> tuple[BanditFeedback, np.ndarray]:
    rng = np.random.default_rng(seed)
    logging = np.tile([0.5, 0.3, 0.2], (n, 1))
    actions = (logging.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    rewards = rng.binomial(1, np.array([0.2, 0.5, 0.7])[actions]).astype(float)
    fb = BanditFeedback(actions=actions, rewards=rewards, propensities=logging[np.arange(n), actions])
    return fb, np.tile([0.2, 0.3, 0.5], (n, 1))


@PROPERTY
@given(st.integers(0, 2**32 - 1))
def test_more_data_gives_a_narrower_interval(seed: int) -> None:
    small, pi_small = simulated(seed, 200)
    large, pi_large = simulated(seed + 1, 800)
    for estimator in (IPS(), SNIPS()):
        a = estimator.estimate(small, target=pi_small)
        b = estimator.estimate(large, target=pi_large)
        assert b.ci_high - b.ci_low < a.ci_high - a.ci_low


def test_four_times_the_data_halves_the_interval() -> None:
    ratios = []
    for seed in range(20):
        small, pi_small = simulated(seed, 500)
        large, pi_large = simulated(1000 + seed, 2000)
        ratios.append(IPS().estimate(small, target=pi_small).stderr / IPS().estimate(large, target=pi_large).stderr)
    assert np.mean(ratios) == pytest.approx(2.0, rel=0.05)


# -- the contract every estimator keeps -------------------------------------------------------------

CLASSES = [pytest.param(cls, id=name) for name, cls in ESTIMATORS.items()]


@pytest.fixture
def log(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n = 300, K = 3, M = 2, full overlap."""
    n, k = 300, 3
    logging = rng.dirichlet(np.full(k, 3.0), size=n)
    actions = (logging.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return {
        "actions": actions,
        "propensities": logging[np.arange(n), actions],
        "logging": logging,
        "rewards": rng.normal([0.5, 3.0], [1.0, 2.0], size=(n, 2)),
        "target": rng.dirichlet(np.full(k, 1.0), size=n),
        "q_hat": rng.normal([0.5, 3.0], 0.5, size=(n, k, 2)),
    }


def fb_of(d: dict[str, np.ndarray], metric: int | None = None, **changes: object) -> BanditFeedback:
    rewards = d["rewards"] if metric is None else d["rewards"][:, metric]
    fields = {"actions": d["actions"], "rewards": rewards, "propensities": d["propensities"]}
    return BanditFeedback(**(fields | changes))  # type: ignore[arg-type]


def q_of(d: dict[str, np.ndarray], metric: int | None = None) -> np.ndarray:
    return d["q_hat"] if metric is None else d["q_hat"][:, :, metric]


def test_registry_holds_the_documented_estimators() -> None:
    assert list(ESTIMATORS) == ["IPS", "SNIPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"]


@pytest.mark.parametrize("cls", CLASSES)
class TestContract:
    def test_registered_under_its_name(self, cls: type[IPS]) -> None:
        assert ESTIMATORS[cls.name] is cls
        assert dataclasses.is_dataclass(cls)

    def test_scalar_rewards_give_floats(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        est = cls().estimate(fb_of(log, 0), target=log["target"], q_hat=q_of(log, 0))
        assert isinstance(est, Estimate)
        assert (est.estimator, est.kind, est.inference, est.alpha) == (cls.name, "value", "normal", 0.05)
        for number in (est.value, est.stderr, est.ci_low, est.ci_high, est.n, est.ess):
            assert type(number) is float and np.isfinite(number)
        assert est.stderr > 0
        assert est.ci_low <= est.value <= est.ci_high
        assert est.n == 300.0
        assert est.ci(0.05) == (est.ci_low, est.ci_high)

    def test_metrics_give_arrays_equal_to_one_metric_at_a_time(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        est = cls().estimate(fb_of(log), target=log["target"], q_hat=q_of(log))
        for field in ("value", "stderr", "ci_low", "ci_high", "n"):
            assert isinstance(getattr(est, field), np.ndarray) and getattr(est, field).shape == (2,)
        assert np.isfinite(est.value).all() and np.isfinite(est.stderr).all()
        assert (est.ci_low <= est.value).all() and (est.value <= est.ci_high).all()
        low, high = est.ci(0.05)
        np.testing.assert_array_equal(low, est.ci_low)
        np.testing.assert_array_equal(high, est.ci_high)
        for m in range(2):
            one = cls().estimate(fb_of(log, m), target=log["target"], q_hat=q_of(log, m))
            assert (est.value[m], est.stderr[m]) == pytest.approx((one.value, one.stderr), rel=1e-12)

    def test_to_dict_is_json(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        for metric in (0, None):
            est = cls().estimate(fb_of(log, metric), target=log["target"], q_hat=q_of(log, metric))
            row = json.loads(json.dumps(est.to_dict(), allow_nan=False))
            assert {"estimator", "kind", "value", "stderr", "ci_low", "ci_high", "n", "ess"} <= set(row)
            assert row["value"] == pytest.approx(est.value if metric is not None else est.value.tolist())

    def test_frozen(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        estimator = cls()
        for name in [f.name for f in dataclasses.fields(cls)]:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(estimator, name, 1.0)
        # other attributes cannot be set either (CPython ≤ 3.13 raises TypeError, not FrozenInstanceError,
        # from the __setattr__ of a frozen slots dataclass for names that are not fields)
        for name in ("name", "anything"):
            with pytest.raises((AttributeError, TypeError)):
                setattr(estimator, name, 1.0)
        assert estimator == cls()
        est = estimator.estimate(fb_of(log, 0), target=log["target"], q_hat=q_of(log, 0))
        with pytest.raises(dataclasses.FrozenInstanceError):
            est.value = 0.0  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            est.diagnostics.ess = 0.0  # type: ignore[misc]

    def test_hyperparameters_keyword_only(self, cls: type[IPS]) -> None:
        params = inspect.signature(cls).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
        assert all(p.default is not inspect.Parameter.empty for p in params)  # cls() works
        with pytest.raises(TypeError):
            cls(1.0)  # type: ignore[call-arg]

    def test_q_hat_needed_or_ignored(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        fb = fb_of(log, 0)
        if cls.needs_q_hat:
            with pytest.raises(ValueError, match="needs q_hat"):
                cls().estimate(fb, target=log["target"])
        else:
            with_q = cls().estimate(fb, target=log["target"], q_hat=np.full((7, 7), np.nan))
            assert with_q.value == cls().estimate(fb, target=log["target"]).value

    def test_paired_difference_and_relative(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        fb, q = fb_of(log), q_of(log)
        t = cls().estimate(fb, target=log["target"], q_hat=q)
        b = cls().estimate(fb, target=log["logging"], q_hat=q)
        diff = cls().estimate_difference(fb, target=log["target"], baseline=log["logging"], q_hat=q)
        rel = cls().estimate_difference(fb, target=log["target"], baseline=log["logging"], q_hat=q, relative=True)
        np.testing.assert_allclose(diff.value, t.value - b.value, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rel.value, 100 * (t.value / b.value - 1), rtol=1e-10)
        assert (diff.kind, rel.kind) == ("difference", "relative")
        for est in (diff, rel):
            assert np.isfinite(est.stderr).all() and (est.ci_low <= est.value).all() and (est.value <= est.ci_high).all()
        same = cls().estimate_difference(fb, target=log["target"], baseline=log["target"], q_hat=q)
        np.testing.assert_array_equal(same.value, [0.0, 0.0])

    def test_row_order_does_not_matter(self, cls: type[IPS], log: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        perm = rng.permutation(300)
        a = cls().estimate(fb_of(log), target=log["target"], q_hat=q_of(log))
        b = cls().estimate(fb_of(log).subset(perm), target=log["target"][perm], q_hat=q_of(log)[perm])
        np.testing.assert_allclose(b.value, a.value, rtol=1e-12)
        np.testing.assert_allclose(b.stderr, a.stderr, rtol=1e-10)

    def test_sample_weight_two_is_a_duplicated_row(self, cls: type[IPS], log: dict[str, np.ndarray]) -> None:
        rows = np.r_[np.arange(300), np.arange(50)]  # rows 0–49 twice
        s = np.where(np.arange(300) < 50, 2.0, 1.0)
        weighted = cls().estimate(fb_of(log, sample_weight=s), target=log["target"], q_hat=q_of(log))
        duplicated = cls().estimate(fb_of(log).subset(rows), target=log["target"][rows], q_hat=q_of(log)[rows])
        np.testing.assert_allclose(weighted.value, duplicated.value, rtol=1e-12)

    @pytest.mark.parametrize("inference", [Normal(), Bootstrap(n_replicates=100)], ids=["normal", "bootstrap"])
    def test_batches_merge_to_the_whole(
        self, cls: type[IPS], log: dict[str, np.ndarray], rng: np.random.Generator, inference: Normal
    ) -> None:
        """DESIGN §5: evaluated whole or batch by batch (partial sums added), the same numbers."""
        fb = fb_of(log, keys=rng.integers(0, 2**63, size=300, dtype=np.uint64))
        kwargs = {"target": log["target"], "baseline": log["logging"], "q_hat": q_of(log)}
        whole = cls().estimate_difference(fb, inference=inference, **kwargs)
        parts = [np.arange(300) < 120, np.arange(300) >= 120]
        partials = [
            cls().partial(fb.subset(rows), **{k: v[rows] for k, v in kwargs.items()},
                          n_boot=inference.n_boot, seed=inference.seed)
            for rows in parts
        ]
        merged = cls().finalize(partials[1] + partials[0], inference=inference)
        for field in ("value", "stderr", "ci_low", "ci_high", "n"):
            np.testing.assert_allclose(getattr(merged, field), getattr(whole, field), rtol=1e-9, err_msg=field)
        assert merged.ess == pytest.approx(whole.ess, rel=1e-12)
        assert merged.diagnostics.mean_weight == pytest.approx(whole.diagnostics.mean_weight, rel=1e-12)

    @QUIET
    def test_missing_rewards_use_the_rows_that_have_them(
        self, cls: type[IPS], log: dict[str, np.ndarray], rng: np.random.Generator
    ) -> None:
        rewards = log["rewards"].copy()
        missing = rng.random(300) < 0.3
        rewards[missing, 1] = np.nan
        est = cls().estimate(fb_of(log, rewards=rewards), target=log["target"], q_hat=q_of(log))
        kept = ~missing
        sub = fb_of(log, 1).subset(kept)
        alone = cls().estimate(sub, target=log["target"][kept], q_hat=q_of(log, 1)[kept])
        assert est.n[1] == kept.sum() and est.n[0] == 300
        assert (est.value[1], est.stderr[1]) == pytest.approx((alone.value, alone.stderr), rel=1e-12)
