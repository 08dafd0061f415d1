"""Error tables: (input, exception, message) for the feedback container, the estimators' inputs,
hyperparameters and interval levels. Messages are matched exactly (as literal strings)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from estimators import (
    DM,
    DR,
    ESTIMATORS,
    IPS,
    SNDR,
    SNIPS,
    BanditFeedback,
    Bootstrap,
    DRos,
    EmpiricalBernstein,
    EstimatorInputError,
    EstimatorSupportError,
    Normal,
    SwitchDR,
)

#   three rows, K = 2 (all arms eligible unless a case says otherwise)
VALID: dict[str, Any] = {
    "actions": np.array([0, 1, 0]),
    "rewards": np.array([1.0, 0.0, 0.5]),
    "propensities": np.array([0.5, 0.25, 0.8]),
}
TARGET = np.array([[0.75, 0.25], [0.5, 0.5], [0.2, 0.8]])
Q_HAT = np.array([[0.8, 0.2], [0.4, 0.4], [0.6, 0.0]])
ELIGIBLE = np.array([[True, True], [False, True], [True, False]])


def test_errors_are_value_errors() -> None:
    assert issubclass(EstimatorInputError, ValueError)
    assert issubclass(EstimatorSupportError, EstimatorInputError)


FEEDBACK_ERRORS = [
    # shapes
    pytest.param({"rewards": np.array([1.0, 0.0])}, "rewards must have shape (n,) or (n, M) with n = 3. Got (2,).",
                 id="rewards-length"),
    pytest.param({"rewards": np.zeros((3, 1, 1))}, "rewards must have shape (n,) or (n, M) with n = 3. Got (3, 1, 1).",
                 id="rewards-3d"),
    pytest.param({"rewards": np.array([1.0, np.inf, 0.5])}, "rewards must be finite or NaN (missing). Got inf.",
                 id="rewards-inf"),
    pytest.param({"propensities": np.array([0.5, 0.25])}, "propensities must have shape (3,). Got (2,).",
                 id="propensities-length"),
    pytest.param({"actions": np.array([0.0, 1.0, 0.0])},
                 "actions must be a 1-d integer array. Got shape (3,), dtype float64.", id="actions-float"),
    pytest.param({"actions": np.array([[0, 1, 0]])},
                 "actions must be a 1-d integer array. Got shape (1, 3), dtype int64.", id="actions-2d"),
    pytest.param({"actions": np.array([], dtype=np.int64), "rewards": np.array([]), "propensities": np.array([])},
                 "BanditFeedback needs at least one row. Got 0 rows.", id="empty"),
    pytest.param({"eligible": np.ones((2, 2), dtype=bool)}, "eligible must have shape (n, K) with n = 3. Got (2, 2).",
                 id="eligible-rows"),
    pytest.param({"eligible": np.ones(3, dtype=bool)}, "eligible must have shape (n, K) with n = 3. Got (3,).",
                 id="eligible-1d"),
    pytest.param({"eligible": np.ones((3, 3), dtype=bool), "n_arms": 2}, "eligible has 3 arms but n_arms is 2.",
                 id="eligible-arms"),
    pytest.param({"sample_weight": np.ones(2)}, "sample_weight must have shape (3,). Got (2,).",
                 id="sample-weight-length"),
    pytest.param({"logging_probabilities": np.full((3, 3), 1 / 3)},
                 "logging_probabilities must have shape (3, 2). Got (3, 3).", id="logging-probabilities-shape"),
    pytest.param({"keys": np.arange(2, dtype=np.uint64)}, "keys must have shape (3,). Got (2,).", id="keys-length"),
    # propensities in (0, 1]
    pytest.param({"propensities": np.array([0.5, 0.0, 0.8])},
                 "propensities must be in (0, 1]. 1 rows are not (first rows [1]: [0.0]).", id="propensity-zero"),
    pytest.param({"propensities": np.array([1.5, 0.25, 1.0])},
                 "propensities must be in (0, 1]. 1 rows are not (first rows [0]: [1.5]).", id="propensity-above-one"),
    pytest.param({"propensities": np.array([-0.5, 0.25, 2.0])},
                 "propensities must be in (0, 1]. 2 rows are not (first rows [0, 2]: [-0.5, 2.0]).",
                 id="propensity-negative"),
    pytest.param({"propensities": np.array([0.5, 0.25, np.nan])},
                 "propensities must not contain NaN. 1 rows do (first rows [2]).", id="propensity-nan"),
    # sample weights > 0
    pytest.param({"sample_weight": np.array([1.0, 0.0, 1.0])}, "sample_weight must be finite and > 0 on every row.",
                 id="sample-weight-zero"),
    pytest.param({"sample_weight": np.array([1.0, -2.0, 1.0])}, "sample_weight must be finite and > 0 on every row.",
                 id="sample-weight-negative"),
    pytest.param({"sample_weight": np.array([1.0, np.inf, 1.0])}, "sample_weight must be finite and > 0 on every row.",
                 id="sample-weight-inf"),
    pytest.param({"sample_weight": np.array([1.0, np.nan, 1.0])},
                 "sample_weight must not contain NaN. 1 rows do (first rows [1]).", id="sample-weight-nan"),
    # actions are arm indices, inside the eligible set
    pytest.param({"actions": np.array([0, 2, 0]), "n_arms": 2},
                 "actions must be arm indices in [0, 2). Got values in [0, 2].", id="action-too-large"),
    pytest.param({"actions": np.array([-1, 1, 0])}, "actions must be arm indices in [0, 2). Got values in [-1, 1].",
                 id="action-negative"),
    pytest.param({"actions": np.array([0, 2, 0]), "eligible": np.ones((3, 2), dtype=bool)},
                 "actions must be arm indices in [0, 2). Got values in [0, 2].", id="action-beyond-eligible"),
    pytest.param({"eligible": np.array([[True, True], [True, False], [False, True]])},
                 "2 logged actions are outside their row's eligible set (first rows [1, 2]).", id="action-not-eligible"),
]


@pytest.mark.parametrize(("changes", "match"), FEEDBACK_ERRORS)
def test_feedback_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(EstimatorInputError, match=re.escape(match)):
        BanditFeedback(**(VALID | changes))


OBP_FEEDBACK = {"n_actions": 2, "action": VALID["actions"], "reward": VALID["rewards"], "pscore": VALID["propensities"]}


@pytest.mark.parametrize(
    ("changes", "action_dist", "match"),
    [
        pytest.param({"position": np.array([0, 1, 0])}, None,
                     "Only single-position OBP feedback is supported (position must be all 0).", id="slate"),
        pytest.param({}, np.full((3, 3, 1), 1 / 3), "action_dist must have shape (3, 2, 1). Got (3, 3, 1).",
                     id="action-dist-shape"),
    ],
)
def test_from_obp_rejects(changes: dict[str, Any], action_dist: np.ndarray | None, match: str) -> None:
    with pytest.raises(EstimatorInputError, match=re.escape(match)):
        BanditFeedback.from_obp(OBP_FEEDBACK | changes, action_dist)


FB = BanditFeedback(**VALID)
FB_ELIGIBLE = BanditFeedback(**(VALID | {"actions": np.array([0, 1, 0]), "eligible": ELIGIBLE}))
FB_TWO_METRICS = BanditFeedback(**(VALID | {"rewards": np.array([[1.0, 2.0], [0.0, 3.0], [0.5, 4.0]])}))
BAD_TARGET = np.array([[0.5, 0.4], [0.5, 0.5], [0.2, 0.8]])

ESTIMATE_ERRORS = [
    # (estimator, feedback, keyword arguments, exception, message)
    pytest.param(IPS(), FB, {"target": np.full((3, 3), 1 / 3)}, EstimatorInputError,
                 "target must have shape (n, K) = (3, 2). Got (3, 3).", id="target-arms"),
    pytest.param(SNIPS(), FB, {"target": TARGET[:2]}, EstimatorInputError,
                 "target must have shape (n, K) = (3, 2). Got (2, 2).", id="target-rows"),
    pytest.param(IPS(), FB, {"target": TARGET[:, 0]}, EstimatorInputError,
                 "target must have shape (n, K) = (3, 2). Got (3,).", id="target-1d"),
    pytest.param(IPS(), FB, {"target": np.where(TARGET == 0.5, np.nan, TARGET)}, EstimatorInputError,
                 "target must hold finite, non-negative probabilities.", id="target-nan"),
    pytest.param(IPS(), FB, {"target": np.array([[1.5, -0.5], [0.5, 0.5], [0.2, 0.8]])}, EstimatorInputError,
                 "target must hold finite, non-negative probabilities.", id="target-negative"),
    pytest.param(IPS(), FB, {"target": BAD_TARGET}, EstimatorInputError,
                 "target rows must sum to 1. 1 rows do not (first rows [0]: sums [0.9]).", id="target-row-sum"),
    pytest.param(DR(), FB, {"target": TARGET * 2, "q_hat": Q_HAT}, EstimatorInputError,
                 "target rows must sum to 1. 3 rows do not", id="target-row-sums"),
    pytest.param(IPS(), FB_ELIGIBLE, {"target": TARGET}, EstimatorSupportError,
                 "target puts probability outside the eligible set on 2 rows (first rows [1, 2]).",
                 id="target-outside-eligible"),
    pytest.param(DR(), FB, {"target": TARGET, "q_hat": np.zeros((3, 3))}, EstimatorInputError,
                 "q_hat must have shape (3, 2) to match the feedback. Got (3, 3).", id="q-hat-arms"),
    pytest.param(DM(), FB, {"target": TARGET, "q_hat": np.zeros((2, 2))}, EstimatorInputError,
                 "q_hat must have shape (3, 2) to match the feedback. Got (2, 2).", id="q-hat-rows"),
    pytest.param(SNDR(), FB, {"target": TARGET, "q_hat": np.zeros((3, 2, 2))}, EstimatorInputError,
                 "q_hat must have shape (3, 2) to match the feedback. Got (3, 2, 2).", id="q-hat-metrics-scalar"),
    pytest.param(DR(), FB_TWO_METRICS, {"target": TARGET, "q_hat": Q_HAT}, EstimatorInputError,
                 "q_hat must have shape (3, 2, 2) to match the feedback. Got (3, 2).", id="q-hat-missing-metric-axis"),
    pytest.param(DR(), FB, {"target": TARGET, "q_hat": np.where(Q_HAT == 0.4, np.nan, Q_HAT)}, EstimatorInputError,
                 "q_hat must be finite on every eligible (row, arm).", id="q-hat-nan"),
    pytest.param(IPS(), BanditFeedback(**(VALID | {"rewards": np.array([[1.0, np.nan]] * 3)})), {"target": TARGET},
                 EstimatorInputError, "Every metric needs at least one observed (non-NaN) reward.",
                 id="metric-never-observed"),
    pytest.param(IPS(), FB, {"target": TARGET, "alpha": 1.5}, ValueError,
                 "alpha must be a float in (0, 1). Got 1.5 instead.", id="alpha"),
] + [
    pytest.param(cls(), FB, {"target": TARGET}, EstimatorInputError,
                 f"{name} needs q_hat, the reward model's predictions of shape (n, K[, M]).", id=f"{name}-without-q-hat")
    for name, cls in ESTIMATORS.items()
    if cls.needs_q_hat
]


@pytest.mark.parametrize(("estimator", "fb", "kwargs", "exception", "match"), ESTIMATE_ERRORS)
def test_estimate_rejects(
    estimator: IPS, fb: BanditFeedback, kwargs: dict[str, Any], exception: type[Exception], match: str
) -> None:
    with pytest.raises(exception, match=re.escape(match)):
        estimator.estimate(fb, **kwargs)


def test_every_model_based_estimator_needs_q_hat() -> None:
    assert {name for name, cls in ESTIMATORS.items() if cls.needs_q_hat} == {"DM", "DR", "SNDR", "SwitchDR", "DRos"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"baseline": TARGET[:, :1]}, "baseline must have shape (n, K) = (3, 2). Got (3, 1).",
                     id="baseline-shape"),
        pytest.param({"baseline": BAD_TARGET}, "baseline rows must sum to 1. 1 rows do not", id="baseline-row-sum"),
        pytest.param({"target": BAD_TARGET, "baseline": TARGET}, "target rows must sum to 1.", id="target-row-sum"),
    ],
)
def test_estimate_difference_rejects(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(EstimatorInputError, match=re.escape(match)):
        DR().estimate_difference(FB, **({"target": TARGET, "q_hat": Q_HAT} | kwargs))


def test_baseline_outside_eligible_is_a_support_error() -> None:
    baseline = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # arm 0 is not eligible in row 1
    target = np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(EstimatorSupportError, match=re.escape("baseline puts probability outside the eligible set")):
        IPS().estimate_difference(FB_ELIGIBLE, target=target, baseline=baseline)


def test_q_hat_may_be_anything_outside_the_eligible_set() -> None:
    target = np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
    q = np.where(ELIGIBLE, Q_HAT, np.nan)
    est = DR().estimate(FB_ELIGIBLE, target=target, q_hat=q)
    assert est.value == pytest.approx(DR().estimate(FB_ELIGIBLE, target=target, q_hat=np.where(ELIGIBLE, Q_HAT, 9.0)).value)


def test_partials_of_different_estimators_do_not_merge() -> None:
    with pytest.raises(EstimatorInputError, match=re.escape("Only partial sums of the same estimator, statistic, bootstrap and arm sums can be merged.")):
        IPS().partial(FB, target=TARGET) + SNIPS().partial(FB, target=TARGET)
    with pytest.raises(EstimatorInputError, match=re.escape("Only partial sums of the same estimator, statistic, bootstrap and arm sums can be merged.")):
        IPS().partial(FB, target=TARGET) + IPS().partial(FB, target=TARGET, baseline=TARGET)


# -- hyperparameters --------------------------------------------------------------------------------


def param_message(owner: str, name: str, low: str, got: str) -> str:
    """The scikit-learn style template of STYLE.md; the estimators may add " or 'auto'" to the range."""
    head = re.escape(f"The '{name}' parameter of {owner} must be a float in {low}, inf]")
    return f"^{head}( or 'auto')?{re.escape(f'. Got {got} instead.')}$"


HYPERPARAMETER_ERRORS = [
    pytest.param(IPS, {"clip": -1.0}, param_message("IPS", "clip", "(0", "-1.0"), id="IPS-clip-negative"),
    pytest.param(IPS, {"clip": 0.0}, param_message("IPS", "clip", "(0", "0.0"), id="IPS-clip-zero"),
    pytest.param(IPS, {"clip": float("nan")}, param_message("IPS", "clip", "(0", "nan"), id="IPS-clip-nan"),
    pytest.param(IPS, {"clip": "big"}, param_message("IPS", "clip", "(0", "'big'"), id="IPS-clip-string"),
    pytest.param(IPS, {"clip": True}, param_message("IPS", "clip", "(0", "True"), id="IPS-clip-bool"),
    pytest.param(IPS, {"clip": None}, param_message("IPS", "clip", "(0", "None"), id="IPS-clip-none"),
    pytest.param(SwitchDR, {"threshold": 0}, param_message("SwitchDR", "threshold", "(0", "0"), id="SwitchDR-zero"),
    pytest.param(SwitchDR, {"threshold": -np.inf}, param_message("SwitchDR", "threshold", "(0", "-inf"),
                 id="SwitchDR-minus-inf"),
    pytest.param(DRos, {"shrinkage": -1.0}, param_message("DRos", "shrinkage", "[0", "-1.0"), id="DRos-negative"),
    pytest.param(DRos, {"shrinkage": float("nan")}, param_message("DRos", "shrinkage", "[0", "nan"), id="DRos-nan"),
]


@pytest.mark.parametrize(("cls", "kwargs", "pattern"), HYPERPARAMETER_ERRORS)
def test_bad_hyperparameter(cls: type, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        cls(**kwargs)


def test_ips_clip_message_is_the_documented_one() -> None:
    """STYLE.md's template, verbatim (an " or 'auto'" before the full stop is tolerated)."""
    with pytest.raises(ValueError) as info:
        IPS(clip=-1.0)
    assert str(info.value).replace(" or 'auto'", "") == (
        "The 'clip' parameter of IPS must be a float in (0, inf]. Got -1.0 instead."
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"n_replicates": 1}, "The 'n_replicates' parameter of Bootstrap must be an int >= 2. Got 1 instead.",
                     id="one"),
        pytest.param({"n_replicates": 10.0},
                     "The 'n_replicates' parameter of Bootstrap must be an int >= 2. Got 10.0 instead.", id="float"),
    ],
)
def test_bad_bootstrap(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        Bootstrap(**kwargs)


@pytest.mark.parametrize(
    "make", [lambda: IPS(2.0), lambda: SwitchDR(2.0), lambda: DRos(2.0), lambda: SNIPS(2.0), lambda: Bootstrap(100)],
    ids=["IPS", "SwitchDR", "DRos", "SNIPS", "Bootstrap"],
)
def test_settings_are_keyword_only(make: Any) -> None:
    with pytest.raises(TypeError):
        make()


@pytest.mark.parametrize("make", [lambda: IPS(clp=2.0), lambda: DR(clip=2.0), lambda: SwitchDR(treshold=1.0)],
                         ids=["IPS-clp", "DR-clip", "SwitchDR-treshold"])
def test_misspelled_settings_are_rejected(make: Any) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        make()


# -- interval levels --------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.5, 0.0, 1.0, -0.1])
@pytest.mark.parametrize(
    "inference", [Normal(), Bootstrap(n_replicates=50), EmpiricalBernstein()], ids=["normal", "bootstrap", "bernstein"]
)
def test_ci_rejects_alpha_outside_unit_interval(inference: Normal, alpha: float) -> None:
    est = IPS().estimate(FB, target=TARGET, inference=inference)
    with pytest.raises(ValueError, match=re.escape(f"alpha must be a float in (0, 1). Got {alpha!r} instead.")):
        est.ci(alpha=alpha)
