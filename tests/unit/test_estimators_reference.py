"""Estimators against exact hand-computed values and against the textbook formulas.

The textbook formulas are Open Bandit Pipeline's definitions of IPW, SNIPW, DM, DR, SNDR, Switch-DR
and DRos, written out here as numpy one-liners (with sample weights s they become s-weighted means;
s = 1 gives OBP's formulas exactly).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import DM, DR, IPS, SNDR, SNIPS, BanditFeedback, DRos, Estimate, SupportWarning, SwitchDR

# -- three rows, K = 2, worked by hand -----------------------------------------------------------
#
#   row  a  r    p     π(·|x)        w = π(a|x)/p   q̂(x,·)      Σ_a π q̂          q̂(x,a)  r − q̂(x,a)  w (r − q̂)
#   0    0  1.0  0.5   (0.75, 0.25)  1.5            (0.8, 0.2)  .60 + .05 = .65  0.8     +0.2         +0.3
#   1    1  0.0  0.25  (0.5, 0.5)    2.0            (0.4, 0.4)  .20 + .20 = .40  0.4     −0.4         −0.8
#   2    0  0.5  0.8   (0.2, 0.8)    0.25           (0.6, 0.0)  .12 + 0   = .12  0.6     −0.1         −0.025
#
#   Σ w = 3.75   Σ w r = 1.5 + 0 + 0.125 = 1.625   Σ dm = 1.17   Σ w (r − q̂) = −0.525
ACTIONS = np.array([0, 1, 0])
REWARDS = np.array([1.0, 0.0, 0.5])
PROPENSITIES = np.array([0.5, 0.25, 0.8])
TARGET = np.array([[0.75, 0.25], [0.5, 0.5], [0.2, 0.8]])
Q_HAT = np.array([[0.8, 0.2], [0.4, 0.4], [0.6, 0.0]])
#: "always arm 0": w0 = (1/0.5, 0/0.25, 1/0.8) = (2, 0, 1.25), dm0 = q̂(x, 0) = (0.8, 0.4, 0.6)
BASELINE = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])


def three_rows(**changes: object) -> BanditFeedback:
    fields: dict[str, object] = {"actions": ACTIONS, "rewards": REWARDS, "propensities": PROPENSITIES}
    return BanditFeedback(**(fields | changes))  # type: ignore[arg-type]


# -- exact hand-computed values -------------------------------------------------------------------


def test_ips_single_row_is_two() -> None:
    # p_log = 0.3, r = 1, π = 0.6 → w = 2 → IPS = 2 · 1 = 2.0; SNIPS = 2 / 2 = 1.0.
    # Arm 1 is never logged (40 % of the target's mass) and the mean weight is 2, so it warns.
    fb = BanditFeedback(actions=np.array([0]), rewards=np.array([1.0]), propensities=np.array([0.3]), n_arms=2)
    with pytest.warns(SupportWarning):
        ips = IPS().estimate(fb, target=np.array([[0.6, 0.4]]))
    with pytest.warns(SupportWarning):
        snips = SNIPS().estimate(fb, target=np.array([[0.6, 0.4]]))
    assert ips.value == pytest.approx(2.0, abs=1e-15)
    assert snips.value == pytest.approx(1.0, abs=1e-15)
    assert isinstance(ips, Estimate) and ips.n == 1.0 and ips.estimator == "IPS"


def test_ips_two_rows_value_stderr_and_interval() -> None:
    # w = (0.6/0.3, 0.4/0.5) = (2, 0.8); w r = (2, 0) → IPS = 1.0
    # sample variance of w r (ddof=1) = ((2−1)² + (0−1)²) / 1 = 2 → stderr = sqrt(2 / 2) = 1.0
    # 95 % normal interval: 1 ± 1.959963984540054
    fb = BanditFeedback(actions=np.array([0, 1]), rewards=np.array([1.0, 0.0]), propensities=np.array([0.3, 0.5]))
    est = IPS().estimate(fb, target=np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert est.value == pytest.approx(1.0, abs=1e-15)
    assert est.stderr == pytest.approx(1.0, abs=1e-15)
    assert est.ci_low == pytest.approx(1.0 - 1.959963984540054, abs=1e-12)
    assert est.ci_high == pytest.approx(1.0 + 1.959963984540054, abs=1e-12)


REFERENCE = [
    # (estimator, value, n_modified, hyperparameter)
    pytest.param(IPS(), 1.625 / 3, 0, None, id="IPS"),  # Σ w r / n
    # clip 1: w̃ = (1, 1, 0.25) → (1 + 0 + 0.125) / 3; rows 0 and 1 clipped
    pytest.param(IPS(clip=1.0), 1.125 / 3, 2, 1.0, id="IPS-clip1"),
    # clip 0.5: w̃ = (0.5, 0.5, 0.25) → (0.5 + 0 + 0.125) / 3
    pytest.param(IPS(clip=0.5), 0.625 / 3, 2, 0.5, id="IPS-clip0.5"),
    pytest.param(SNIPS(), 1.625 / 3.75, 0, None, id="SNIPS"),  # Σ w r / Σ w = 13/30
    pytest.param(DM(), 1.17 / 3, 0, None, id="DM"),  # mean Σ_a π q̂ = 0.39
    # DR: mean(dm + w (r − q̂)) = (0.65 + 0.3 + 0.40 − 0.8 + 0.12 − 0.025) / 3 = 0.645 / 3 = 0.215
    pytest.param(DR(), 0.645 / 3, 0, None, id="DR"),
    # SNDR: 0.39 + (−0.525 / 3.75) = 0.39 − 0.14 = 0.25
    pytest.param(SNDR(), 0.25, 0, None, id="SNDR"),
    # Switch-DR τ = 1.5: row 1 (w = 2) switched off, row 0 (w = 1.5 ≤ τ) kept: (1.17 + 0.3 − 0.025) / 3
    pytest.param(SwitchDR(threshold=1.5), 1.445 / 3, 1, 1.5, id="SwitchDR-1.5"),
    # Switch-DR τ = 1: rows 0 and 1 switched off: (1.17 − 0.025) / 3
    pytest.param(SwitchDR(threshold=1.0), 1.145 / 3, 2, 1.0, id="SwitchDR-1"),
    pytest.param(SwitchDR(), 0.645 / 3, 0, None, id="SwitchDR-inf-is-DR"),
    # DRos λ = 1: w̃ = w / (w² + 1) = (1.5/3.25, 2/5, 0.25/1.0625) = (6/13, 2/5, 4/17), all shrunk > 1 %
    pytest.param(DRos(shrinkage=1.0), (1.17 + 6 / 13 * 0.2 - 0.4 * 0.4 - 4 / 17 * 0.1) / 3, 3, 1.0, id="DRos-1"),
    # DRos λ = 4: w̃ = 4w / (w² + 4) = (6/6.25, 8/8, 1/4.0625) = (0.96, 1, 16/65)
    pytest.param(DRos(shrinkage=4.0), (1.17 + 0.96 * 0.2 - 1.0 * 0.4 - 16 / 65 * 0.1) / 3, 3, 4.0, id="DRos-4"),
    pytest.param(DRos(), 0.645 / 3, 0, None, id="DRos-inf-is-DR"),
]


@pytest.mark.parametrize(("estimator", "expected", "n_modified", "hyperparameter"), REFERENCE)
def test_hand_computed_value(estimator: IPS, expected: float, n_modified: int, hyperparameter: float | None) -> None:
    est = estimator.estimate(three_rows(), target=TARGET, q_hat=Q_HAT)
    assert est.value == pytest.approx(expected, rel=1e-13, abs=1e-15)
    assert est.diagnostics.n_modified == n_modified
    assert est.diagnostics.hyperparameter == hyperparameter
    assert est.n == 3.0


SAMPLE_WEIGHTED = [
    # s = (1, 2, 1): Σ s = 4; s w = (1.5, 4, 0.25), Σ s w = 5.75
    pytest.param(IPS(), 1.625 / 4, id="IPS"),  # (1.5 + 2·0 + 0.125) / 4
    pytest.param(SNIPS(), 1.625 / 5.75, id="SNIPS"),  # Σ s w r / Σ s w
    pytest.param(DM(), (0.65 + 2 * 0.40 + 0.12) / 4, id="DM"),  # 1.57 / 4
    pytest.param(DR(), (0.95 + 2 * (0.40 - 0.8) + 0.095) / 4, id="DR"),  # 0.245 / 4
    # 1.57 / 4 + (0.3 − 1.6 − 0.025) / 5.75
    pytest.param(SNDR(), 1.57 / 4 - 1.325 / 5.75, id="SNDR"),
    # row 1 switched off: (0.95 + 2·0.40 + 0.095) / 4
    pytest.param(SwitchDR(threshold=1.5), 1.845 / 4, id="SwitchDR"),
]


@pytest.mark.parametrize(("estimator", "expected"), SAMPLE_WEIGHTED)
def test_hand_computed_value_with_sample_weight(estimator: IPS, expected: float) -> None:
    est = estimator.estimate(three_rows(sample_weight=np.array([1.0, 2.0, 1.0])), target=TARGET, q_hat=Q_HAT)
    assert est.value == pytest.approx(expected, rel=1e-13)


# Two metrics: metric 0 is REWARDS; metric 1 = (2, 4, 8) with q̂ ≡ 1 for it.
REWARDS_2 = np.column_stack([REWARDS, [2.0, 4.0, 8.0]])
Q_HAT_2 = np.stack([Q_HAT, np.ones((3, 2))], axis=2)
MULTI = [
    pytest.param(IPS(), [1.625 / 3, (1.5 * 2 + 2 * 4 + 0.25 * 8) / 3], id="IPS"),  # metric 1: 13/3
    pytest.param(SNIPS(), [1.625 / 3.75, 13 / 3.75], id="SNIPS"),
    pytest.param(DM(), [0.39, 1.0], id="DM"),
    # metric 1: mean(1 + w (r − 1)) = (1 + 1.5·1 + 1 + 2·3 + 1 + 0.25·7) / 3 = 12.25 / 3
    pytest.param(DR(), [0.215, 12.25 / 3], id="DR"),
    pytest.param(SNDR(), [0.25, 1 + 9.25 / 3.75], id="SNDR"),  # 1 + Σ w (r − 1) / Σ w
    # τ = 1.5 switches row 1 off: metric 1 = (2.5 + 1 + 2.75) / 3
    pytest.param(SwitchDR(threshold=1.5), [1.445 / 3, 6.25 / 3], id="SwitchDR"),
]


@pytest.mark.parametrize(("estimator", "expected"), MULTI)
def test_hand_computed_multi_metric(estimator: IPS, expected: list[float]) -> None:
    est = estimator.estimate(three_rows(rewards=REWARDS_2), target=TARGET, q_hat=Q_HAT_2)
    assert isinstance(est.value, np.ndarray) and est.value.shape == (2,)
    assert est.stderr.shape == est.ci_low.shape == est.ci_high.shape == (2,)  # type: ignore[union-attr]
    np.testing.assert_allclose(est.value, expected, rtol=1e-13)
    np.testing.assert_array_equal(est.n, [3.0, 3.0])


# A missing outcome: metric 1 is NaN on row 1, so that metric uses rows 0 and 2 only.
REWARDS_NAN = np.array([[1.0, 1.0], [0.0, np.nan], [0.5, 0.0]])
MISSING = [
    pytest.param(IPS(), [1.625 / 3, (1.5 * 1 + 0.25 * 0) / 2], id="IPS"),  # 0.75
    pytest.param(SNIPS(), [1.625 / 3.75, 1.5 / 1.75], id="SNIPS"),  # 6/7
    pytest.param(DM(), [0.39, (0.65 + 0.12) / 2], id="DM"),  # 0.385
    # rows 0, 2: r − q̂ = (0.2, −0.6), w (r − q̂) = (0.3, −0.15) → (0.95 + (−0.03)) / 2 = 0.46
    pytest.param(DR(), [0.215, 0.92 / 2], id="DR"),
    pytest.param(SNDR(), [0.25, 0.385 + 0.15 / 1.75], id="SNDR"),
]


@pytest.mark.parametrize(("estimator", "expected"), MISSING)
def test_hand_computed_with_missing_reward(estimator: IPS, expected: list[float]) -> None:
    est = estimator.estimate(three_rows(rewards=REWARDS_NAN), target=TARGET, q_hat=np.stack([Q_HAT, Q_HAT], axis=2))
    np.testing.assert_allclose(est.value, expected, rtol=1e-13)
    np.testing.assert_array_equal(est.n, [3.0, 2.0])
    assert np.isfinite(est.stderr).all()


DIFFERENCES = [
    # IPS: target 1.625/3 = 13/24, baseline (2·1 + 0 + 1.25·0.5)/3 = 0.875 = 21/24
    pytest.param(IPS(), 13 / 24, 21 / 24, id="IPS"),
    # DR baseline: (Σ dm0 + Σ w0 (r − q̂)) / 3 = (1.8 + 0.4 + 0 − 0.125) / 3 = 2.075 / 3
    pytest.param(DR(), 0.645 / 3, 2.075 / 3, id="DR"),
]


@pytest.mark.parametrize(("estimator", "target_value", "baseline_value"), DIFFERENCES)
def test_hand_computed_difference_and_relative(estimator: IPS, target_value: float, baseline_value: float) -> None:
    fb = three_rows()
    diff = estimator.estimate_difference(fb, target=TARGET, baseline=BASELINE, q_hat=Q_HAT)
    rel = estimator.estimate_difference(fb, target=TARGET, baseline=BASELINE, q_hat=Q_HAT, relative=True)
    # IPS: 13/24 − 21/24 = −1/3 and 100 · (13/21 − 1) = −800/21
    assert diff.kind == "difference" and rel.kind == "relative"
    assert diff.value == pytest.approx(target_value - baseline_value, rel=1e-13)
    assert rel.value == pytest.approx(100 * (target_value / baseline_value - 1), rel=1e-13)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_dros_with_zero_shrinkage_is_dm() -> None:
    # documented "λ = 0 is DM": w̃ = 0 for every row, so the value is mean Σ_a π q̂. The baseline
    # "always arm 0" has w = 0 on row 1 (logged arm 1); DM of it is (0.8 + 0.4 + 0.6) / 3 = 0.6.
    est = DRos(shrinkage=0.0).estimate(three_rows(), target=BASELINE, q_hat=Q_HAT)
    assert est.value == pytest.approx(0.6, rel=1e-13)


def test_dros_with_zero_shrinkage_is_dm_where_every_weight_is_positive() -> None:
    est = DRos(shrinkage=0.0).estimate(three_rows(), target=TARGET, q_hat=Q_HAT)
    assert est.value == pytest.approx(1.17 / 3, rel=1e-13)


def test_hand_computed_ips_difference_is_minus_one_third() -> None:
    diff = IPS().estimate_difference(three_rows(), target=TARGET, baseline=BASELINE)
    rel = IPS().estimate_difference(three_rows(), target=TARGET, baseline=BASELINE, relative=True)
    assert diff.value == pytest.approx(-1 / 3, rel=1e-13)
    assert rel.value == pytest.approx(-800 / 21, rel=1e-13)


# -- textbook formulas (Open Bandit Pipeline's definitions) on random data --------------------------


@pytest.fixture
def logged(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n = 500 rows, K = 4 arms, M = 3 metrics, a stochastic logger and a different target."""
    n, k, m = 500, 4, 3
    logging = rng.dirichlet(np.full(k, 2.0), size=n)
    actions = (logging.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return {
        "actions": actions,
        "propensities": logging[np.arange(n), actions],
        "rewards": rng.normal(loc=[0.0, 1.0, 5.0], scale=[1.0, 0.5, 3.0], size=(n, m)),
        "target": rng.dirichlet(np.full(k, 0.7), size=n),
        "q_hat": rng.normal(loc=[0.0, 1.0, 5.0], size=(n, k, m)),
        "logging": logging,
        "sample_weight": rng.uniform(0.5, 3.0, size=n),
    }


def _textbook(name: str, d: dict[str, np.ndarray], s: np.ndarray, level: float) -> np.ndarray:
    """OBP's estimators, s-weighted (s = 1: exactly OBP's): IPW, SNIPW, DM, DR, SNDR, Switch-DR, DRos."""
    rows = np.arange(len(d["actions"]))
    pi, q, r = d["target"], d["q_hat"], d["rewards"]
    w = (pi[rows, d["actions"]] / d["propensities"])[:, None]  # (n, 1)
    s = s[:, None]
    dm = np.einsum("nk,nkm->nm", pi, q)  # Σ_a π(a|x) q̂(x, a)
    res = r - q[rows, d["actions"]]  # r − q̂(x, a_i)

    def mean(x: np.ndarray) -> np.ndarray:
        return (s * x).sum(axis=0) / s.sum()

    formulas = {
        "IPS": lambda: mean(w * r),
        "IPS-clip": lambda: mean(np.minimum(w, level) * r),
        "SNIPS": lambda: (s * w * r).sum(axis=0) / (s * w).sum(),
        "DM": lambda: mean(dm),
        "DR": lambda: mean(dm + w * res),
        "SNDR": lambda: mean(dm) + (s * w * res).sum(axis=0) / (s * w).sum(),
        "SwitchDR": lambda: mean(dm + (w <= level) * w * res),
        "DRos": lambda: mean(dm + level * w / (w**2 + level) * res),
    }
    return formulas[name]()


TEXTBOOK = [
    pytest.param("IPS", IPS(), math.inf, id="IPW"),
    pytest.param("IPS-clip", IPS(clip=2.0), 2.0, id="IPW-clip"),
    pytest.param("SNIPS", SNIPS(), math.inf, id="SNIPW"),
    pytest.param("DM", DM(), math.inf, id="DM"),
    pytest.param("DR", DR(), math.inf, id="DR"),
    pytest.param("SNDR", SNDR(), math.inf, id="SNDR"),
    pytest.param("SwitchDR", SwitchDR(threshold=1.5), 1.5, id="SwitchDR"),
    pytest.param("DRos", DRos(shrinkage=2.0), 2.0, id="DRos"),
]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample-weighted"])
@pytest.mark.parametrize(("formula", "estimator", "level"), TEXTBOOK)
def test_matches_textbook_formula(
    logged: dict[str, np.ndarray], formula: str, estimator: IPS, level: float, weighted: bool
) -> None:
    s = logged["sample_weight"] if weighted else np.ones(len(logged["actions"]))
    fb = BanditFeedback(
        actions=logged["actions"],
        rewards=logged["rewards"],
        propensities=logged["propensities"],
        sample_weight=s if weighted else None,
    )
    est = estimator.estimate(fb, target=logged["target"], q_hat=logged["q_hat"])
    np.testing.assert_allclose(est.value, _textbook(formula, logged, s, level), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("formula", "estimator", "level"), TEXTBOOK)
def test_difference_and_relative_match_the_two_values(
    logged: dict[str, np.ndarray], formula: str, estimator: IPS, level: float
) -> None:
    fb = BanditFeedback(actions=logged["actions"], rewards=logged["rewards"], propensities=logged["propensities"])
    kwargs = {"target": logged["target"], "q_hat": logged["q_hat"]}
    t = estimator.estimate(fb, **kwargs).value
    b = estimator.estimate(fb, target=logged["logging"], q_hat=logged["q_hat"]).value
    diff = estimator.estimate_difference(fb, baseline=logged["logging"], **kwargs)
    rel = estimator.estimate_difference(fb, baseline=logged["logging"], relative=True, **kwargs)
    np.testing.assert_allclose(diff.value, np.asarray(t) - np.asarray(b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rel.value, 100 * (np.asarray(t) / np.asarray(b) - 1), rtol=1e-10, atol=1e-10)


def test_from_obp_matches_the_ipw_formula(logged: dict[str, np.ndarray]) -> None:
    """An Open Bandit Pipeline ``bandit_feedback`` dict (single position) and its (n, K, 1) action_dist."""
    bandit_feedback = {
        "n_rounds": 500,
        "n_actions": 4,
        "action": logged["actions"],
        "reward": logged["rewards"][:, 0],
        "pscore": logged["propensities"],
        "position": np.zeros(500, dtype=int),
        "pi_b": logged["logging"][:, :, None],
    }
    action_dist = logged["target"][:, :, None]
    fb = BanditFeedback.from_obp(bandit_feedback, action_dist)
    est = IPS().estimate(fb, target=action_dist[:, :, 0])
    w = logged["target"][np.arange(500), logged["actions"]] / logged["propensities"]
    assert est.value == pytest.approx(np.mean(w * logged["rewards"][:, 0]), rel=1e-12)
    assert fb.n_arms == 4 and fb.scalar
    np.testing.assert_array_equal(fb.logging_probabilities, logged["logging"])


# -- diagnostics ------------------------------------------------------------------------------------


def test_hand_computed_diagnostics() -> None:
    # w = (1.5, 2, 0.25): ESS = 3.75² / (2.25 + 4 + 0.0625) = 14.0625 / 6.3125; mean w = 1.25
    # se of mean w = sqrt(Σ (w − 1.25)² / 3² · 3/2) = sqrt((0.0625 + 0.5625 + 1) / 9 · 1.5)
    d = IPS().estimate(three_rows(), target=TARGET).diagnostics
    assert d.ess == pytest.approx(14.0625 / 6.3125, rel=1e-13)
    assert d.max_weight == 2.0
    assert d.mean_weight == pytest.approx(1.25, rel=1e-13)
    assert d.mean_weight_se == pytest.approx(math.sqrt(1.625 / 9 * 1.5), rel=1e-13)
    assert d.mean_weight_flag is False and d.unsupported_share == 0.0
    assert d.warnings == ("Effective sample size is 2 of 3 rows: too few for a reliable interval (below 100).",)


def test_hand_computed_ess_with_sample_weight() -> None:
    # s w = (1.5, 4, 0.25): ESS = 5.75² / (2.25 + 16 + 0.0625)
    est = IPS().estimate(three_rows(sample_weight=np.array([1.0, 2.0, 1.0])), target=TARGET)
    assert est.ess == est.diagnostics.ess == pytest.approx(33.0625 / 18.3125, rel=1e-13)


def test_ess_is_n_when_target_is_the_logger(logged: dict[str, np.ndarray]) -> None:
    fb = BanditFeedback(actions=logged["actions"], rewards=logged["rewards"], propensities=logged["propensities"])
    d = IPS().estimate(fb, target=logged["logging"]).diagnostics
    assert d.ess == pytest.approx(500.0, rel=1e-12)
    assert d.mean_weight == pytest.approx(1.0, rel=1e-12) and d.max_weight == pytest.approx(1.0, rel=1e-12)
    assert not d.mean_weight_flag


def test_ess_and_max_weight_formulas(logged: dict[str, np.ndarray]) -> None:
    s = logged["sample_weight"]
    fb = BanditFeedback(
        actions=logged["actions"], rewards=logged["rewards"], propensities=logged["propensities"], sample_weight=s
    )
    w = logged["target"][np.arange(500), logged["actions"]] / logged["propensities"]
    d = SNIPS().estimate(fb, target=logged["target"]).diagnostics
    assert d.ess == pytest.approx((s * w).sum() ** 2 / ((s * w) ** 2).sum(), rel=1e-12)
    assert d.max_weight == pytest.approx(w.max(), rel=1e-15)
    assert d.mean_weight == pytest.approx((s * w).sum() / s.sum(), rel=1e-12)


def test_mean_weight_flags_wrong_propensities(logged: dict[str, np.ndarray]) -> None:
    right = BanditFeedback(actions=logged["actions"], rewards=logged["rewards"], propensities=logged["propensities"])
    halved = BanditFeedback(
        actions=logged["actions"], rewards=logged["rewards"], propensities=logged["propensities"] / 2
    )
    ok = IPS().estimate(right, target=logged["target"]).diagnostics
    assert not ok.mean_weight_flag and abs(ok.mean_weight - 1) < 4 * ok.mean_weight_se
    with pytest.warns(SupportWarning, match="Mean importance weight"):
        bad = IPS().estimate(halved, target=logged["target"]).diagnostics
    assert bad.mean_weight_flag
    assert bad.mean_weight == pytest.approx(2 * ok.mean_weight, rel=1e-12)


def test_unsupported_arm_is_reported_and_warned_at_the_callers_line() -> None:
    # arms 0 and 1 logged, arm 2 never: the target puts 0.2 on it in every row
    fb = three_rows(n_arms=3)
    target = np.array([[0.6, 0.2, 0.2], [0.4, 0.4, 0.2], [0.2, 0.6, 0.2]])
    with pytest.warns(SupportWarning, match="never played") as record:
        est = IPS().estimate(fb, target=target)
    assert est.diagnostics.unsupported_share == pytest.approx(0.2, rel=1e-13)
    assert any("never played" in note for note in est.diagnostics.warnings)
    assert all(w.filename == __file__ for w in record)  # the warning points at the caller


def test_unsupported_share_uses_logging_probabilities_per_row() -> None:
    # the logger could not play arm 1 in row 2 only; the target puts 0.8 there, weighted by s = 2 of Σ s = 4
    logging = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    fb = three_rows(logging_probabilities=logging, sample_weight=np.array([1.0, 1.0, 2.0]))
    with pytest.warns(SupportWarning, match="never played"):
        d = IPS().estimate(fb, target=TARGET).diagnostics
    assert d.unsupported_share == pytest.approx(2 * 0.8 / 4, rel=1e-13)


@pytest.mark.parametrize(
    ("estimator", "modified"),
    [
        pytest.param(IPS(clip=3.0), lambda w: (w > 3.0).sum(), id="IPS-clip"),
        pytest.param(SwitchDR(threshold=2.0), lambda w: (w > 2.0).sum(), id="SwitchDR"),
        pytest.param(DRos(shrinkage=5.0), lambda w: (5.0 * w / (w**2 + 5.0) < 0.99 * w).sum(), id="DRos"),
        pytest.param(DR(), lambda w: 0, id="DR"),
    ],
)
def test_n_modified_counts_changed_rows(logged: dict[str, np.ndarray], estimator: IPS, modified: object) -> None:
    fb = BanditFeedback(actions=logged["actions"], rewards=logged["rewards"], propensities=logged["propensities"])
    w = logged["target"][np.arange(500), logged["actions"]] / logged["propensities"]
    d = estimator.estimate(fb, target=logged["target"], q_hat=logged["q_hat"]).diagnostics
    expected = int(modified(w))  # type: ignore[operator]
    assert d.n_modified == expected
    assert 0 < expected < 500 or isinstance(estimator, DR)
