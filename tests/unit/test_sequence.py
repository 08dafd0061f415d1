"""The anytime-valid confidence sequences: hand values, loop oracles, batch splits, the canary terms (IPS and doubly
robust), the verdict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from estimators import EstimatorInputError
from estimators.canary import CanaryCS
from estimators.onesided import OneSidedBernsteinCS, OneSidedState
from estimators.sequence import EmpiricalBernsteinCS, SequenceState
from ope.evaluation.monitor import verdict


def _oracle(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The PrPl-EB boundary (Waudby-Smith & Ramdas, Thm 2) written as a plain loop, without the running intersection."""
    low, high, s, q, sl, slx, svp = [], [], 0.0, 0.0, 0.0, 0.0, 0.0
    mu_prev, var_prev = 0.5, 0.25
    for t, xi in enumerate(x, start=1):
        lam = min(0.5, math.sqrt(2 * math.log(2 / alpha) / (var_prev * t * math.log(1 + t))))
        svp += 4 * (xi - mu_prev) ** 2 * (-math.log(1 - lam) - lam) / 4
        sl, slx, s = sl + lam, slx + lam * xi, s + xi
        mu_prev = (0.5 + s) / (t + 1)
        q += (xi - mu_prev) ** 2
        var_prev = (0.25 + q) / (t + 1)
        margin = (math.log(2 / alpha) + svp) / sl
        low.append(max(0.0, slx / sl - margin))
        high.append(min(1.0, slx / sl + margin))
    return np.array(low), np.array(high)


def test_one_row_by_hand() -> None:
    cs = EmpiricalBernsteinCS(alpha=0.05)
    state, bounds = cs.update(cs.start(1), [[1.0]])
    # λ₁ = min(1/2, sqrt(2 ln 40 / (0.25 · 1 · ln 2))) = 1/2; v₁ = 4 (1 − 1/2)² = 1; ψ_E(1/2) = (ln 2 − 1/2) / 4
    assert state.sum_lam[0] == 0.5
    assert state.sum_vpsi[0] == pytest.approx((math.log(2) - 0.5) / 4, rel=1e-15)
    assert bounds.center[0, 0] == 1.0
    assert (bounds.low[0, 0], bounds.high[0, 0]) == (0.0, 1.0)  # margin (ln 40 + ψ) / (1/2) = 7.47: clipped


def test_matches_the_loop_oracle(seed: int = 3) -> None:
    x = np.random.default_rng(seed).beta(2, 5, size=2_000)
    _, bounds = EmpiricalBernsteinCS(alpha=0.1).update(SequenceState.start(1), x[:, None])
    low, high = _oracle(x, 0.1)
    np.testing.assert_allclose(bounds.low[:, 0], np.maximum.accumulate(low), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bounds.high[:, 0], np.minimum.accumulate(high), rtol=1e-9, atol=1e-12)


def test_batches_and_a_json_round_trip_give_the_same_bounds() -> None:
    x = np.random.default_rng(0).random((3_000, 2))
    cs = EmpiricalBernsteinCS(alpha=0.05)
    whole, b_whole = cs.update(cs.start(2), x)
    state, lows = cs.start(2), []
    for part in np.array_split(x, 7):
        state, b = cs.update(SequenceState.from_dict(state.to_dict()), part)
        lows.append(b.low)
    np.testing.assert_allclose(np.vstack(lows), b_whole.low, rtol=1e-12, atol=1e-15)
    assert state.t == whole.t == 3_000


def test_more_data_gives_a_narrower_sequence_that_covers_a_constant() -> None:
    cs = EmpiricalBernsteinCS(alpha=0.05)
    _, b = cs.update(cs.start(1), np.full((5_000, 1), 0.3))
    width = b.high[:, 0] - b.low[:, 0]
    assert width[999] > width[4_999] and (b.low[:, 0] <= 0.3).all() and (b.high[:, 0] >= 0.3).all()


@pytest.mark.parametrize(("kwargs", "x", "match"), [
    ({"alpha": 0.0}, [[0.5]], "'alpha' parameter of EmpiricalBernsteinCS"),
    ({"alpha": 0.05, "truncation": 1.0}, [[0.5]], "'truncation' parameter"),
    ({"alpha": 0.05}, [[1.5]], r"must lie in \[0, 1\]"),
    ({"alpha": 0.05}, [0.5], r"shape \(n, 1\)"),
])
def test_bad_input(kwargs: dict, x: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmpiricalBernsteinCS(**kwargs).update(SequenceState.start(1), x)


def test_canary_ranges_follow_the_design_by_hand() -> None:
    low, high = CanaryCS(alpha=0.05, share=0.2, metric_high=(2.0, 1.0)).ranges()
    # w ≤ 1/0.2 = 5, w₀ ≤ 1/0.8 = 1.25: value [0, 5h], baseline [0, 1.25h], difference [−1.25h, 5h]
    np.testing.assert_array_equal(low, [0, 0, 0, 0, -2.5, -1.25])
    np.testing.assert_array_equal(high, [10, 5, 2.5, 1.25, 10, 5])


def test_canary_of_the_baseline_itself_centres_the_difference_at_zero() -> None:
    cs = CanaryCS(alpha=0.05, share=0.05, metric_high=(1.0,))
    r = np.random.default_rng(1).random((500, 1))
    _, b = cs.update(cs.start(), weight=np.ones(500), baseline_weight=np.ones(500), outcomes=r)
    np.testing.assert_allclose(b.estimate, 0.0, atol=1e-12)
    assert (b.difference[0] <= 0).all() and (b.difference[1] >= 0).all()


@pytest.mark.parametrize(("w", "r", "match"), [
    ([21.0], [[0.5]], r"1 rows have a policy importance weight outside \[0, 20\]"),
    ([1.0], [[1.5]], r"outcome outside its known range"),
])
def test_canary_refuses_rows_outside_the_design(w: list, r: list, match: str) -> None:
    cs = CanaryCS(alpha=0.05, share=0.05, metric_high=(1.0,))
    with pytest.raises(EstimatorInputError, match=match):
        cs.update(cs.start(), weight=w, baseline_weight=[1.0], outcomes=r)


@pytest.mark.parametrize(("cost", "sla", "expected"), [
    ((-0.3, -0.1), (-0.005, 0.02), "better on cost, SLA not worse"),
    ((-0.3, -0.1), (-0.2, -0.1), "worse on SLA: roll back"),
    ((0.1, 0.3), (-0.005, 0.02), "worse on cost: roll back"),
    ((-0.3, -0.1), (-0.02, 0.02), "undecided"),
    ((-0.3, 0.1), (0.01, 0.02), "undecided"),
])
def test_verdict_table(cost: tuple, sla: tuple, expected: str) -> None:
    assert verdict(cost, sla, 0.01) == expected


def _one_sided_oracle(x: np.ndarray, low: float, high: float, alpha: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    """`estimators.onesided`'s boundary written as a plain loop from its Notes, without the running intersection."""
    lg, s, q = math.log(2 / alpha), 0.0, ((high - low) / 2) ** 2
    sums = {"lo": [0.0, 0.0, 0.0], "hi": [0.0, 0.0, 0.0]}
    lows, highs = [], []
    for t, xi in enumerate(x, start=1):
        centre = min(max(s / t, low), high)
        sigma2 = q / t
        for side, scale, xi_scaled in (("lo", centre - low, (xi - centre) / (centre - low)),
                                       ("hi", high - centre, (centre - xi) / (high - centre))):
            lam = min(c, scale * math.sqrt(2 * lg / (sigma2 * t * math.log(1 + t))))
            b = sums[side]
            b[0], b[1], b[2] = b[0] + lam / scale, b[1] + lam / scale * xi, b[2] + (-math.log(1 - lam) - lam) * xi_scaled ** 2
        s += xi
        q += (xi - s / (t + 1)) ** 2
        lo, hi = sums["lo"], sums["hi"]
        lows.append(min(max((lo[1] - lg - lo[2]) / lo[0], low), high))
        highs.append(min(max((hi[1] + lg + hi[2]) / hi[0], low), high))
    return np.array(lows), np.array(highs)


def test_one_sided_matches_its_loop_oracle(seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(3_000) < 0.05, 20 * rng.random(3_000), -rng.random(3_000))  # lopsided, in [−1, 20]
    cs = OneSidedBernsteinCS(alpha=0.1, truncation=0.9)
    _, b = cs.update(OneSidedState.start([-1.0], [20.0]), x[:, None])
    low, high = _one_sided_oracle(x, -1.0, 20.0, 0.1, 0.9)
    np.testing.assert_allclose(b.low[:, 0], np.maximum.accumulate(low), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.high[:, 0], np.minimum.accumulate(high), rtol=1e-9, atol=1e-12)


def test_one_sided_first_row_by_hand() -> None:
    _, b = OneSidedBernsteinCS(alpha=0.05).update(OneSidedState.start([0.0], [2.0]), [[1.0]])
    # centre clip(0, 0, 2) = 0: the lower side's scale is the 1e-9 floor; the upper side's is 2, σ̂² = 1,
    # λ = min(0.9, 2 sqrt(2 ln 40 / ln 2)) = 0.9, ξ = (0 − 1)/2: high = (0.45 + ln 40 + ψ_E(0.9)/4) / 0.45 > 2
    assert b.center[0, 0] == 1.0 and b.high[0, 0] == 2.0 and b.low[0, 0] == 0.0


def test_one_sided_batches_and_json_give_one_pass() -> None:
    x = np.random.default_rng(2).random((2_500, 3)) * [1.0, 5.0, 3.0] - [0.0, 1.0, 2.0]
    cs = OneSidedBernsteinCS(alpha=0.05)
    start = OneSidedState.start([0.0, -1.0, -2.0], [1.0, 4.0, 1.0])
    whole, b_whole = cs.update(start, x)
    state, highs = start, []
    for part in np.array_split(x, 6):
        state, b = cs.update(OneSidedState.from_dict(json.loads(json.dumps(state.to_dict()))), part)
        highs.append(b.high)
    np.testing.assert_allclose(np.vstack(highs), b_whole.high, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(state.hi_beta_x, whole.hi_beta_x, rtol=1e-12)


def test_one_sided_pays_only_for_its_own_side() -> None:
    """A term in [−1, 20] that stays near 0: its lower bound is far closer than its upper one, and both cover 0."""
    x = np.random.default_rng(0).normal(0.0, 0.05, size=(20_000, 1))
    _, b = OneSidedBernsteinCS(alpha=0.05).update(OneSidedState.start([-1.0], [20.0]), x)
    assert -b.low[-1, 0] < 0.5 * b.high[-1, 0] and b.low[-1, 0] < 0 < b.high[-1, 0]
    _, sym = EmpiricalBernsteinCS(alpha=0.05).update(SequenceState.start(1), (x + 1) / 21)
    assert b.high[-1, 0] < 21 * sym.high[-1, 0] - 1  # tighter than the two-sided sequence on the whole range


@pytest.mark.parametrize(("low", "high", "x", "match"), [
    ([0.0], [0.0], [[0.0]], "high > low"),
    ([0.0], [1.0], [[1.5]], r"within their known bounds"),
    ([0.0], [1.0], [[0.5, 0.5]], r"shape \(n, 1\)"),
])
def test_one_sided_bad_input(low: list, high: list, x: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OneSidedBernsteinCS(alpha=0.05).update(OneSidedState.start(low, high), x)


def test_doubly_robust_terms_by_hand() -> None:
    """One row, h = 1, share 0.5: w = 2, w₀ = 0, r = 1, q̂(x, a) = 0.25, q̂(x, π) = 0.5, q̂(x, π₀) = 0.2:
    value 0.5 + 2·0.75 = 2, baseline 0.2 + 0, difference 0.3 + 2·0.75 = 1.8 (each the centre after one row)."""
    cs = CanaryCS(alpha=0.05, share=0.5, metric_high=(1.0,), doubly_robust=True)
    state, b = cs.update(cs.start(), weight=[2.0], baseline_weight=[0.0], outcomes=[[1.0]],
                         q_hat=([[0.25]], [[0.5]], [[0.2]]))
    np.testing.assert_allclose(state.sum_x, [2.0, 0.2, 1.8])
    assert b.estimate[0, 0] == pytest.approx(1.8)
    low, high = cs.ranges()  # [−h/s, h + h/s], [−h/(1−s), h + h/(1−s)], ±(1 + max) h
    np.testing.assert_array_equal(low, [-2.0, -2.0, -3.0])
    np.testing.assert_array_equal(high, [3.0, 3.0, 3.0])


def test_doubly_robust_with_an_exact_model_has_no_residual_noise() -> None:
    """If r = q̂(x, a) exactly, every difference term is Δq̂(x): the sequence's centre is its plain mean."""
    rng = np.random.default_rng(4)
    q = rng.random((400, 1))
    cs = CanaryCS(alpha=0.05, share=0.1, metric_high=(1.0,), doubly_robust=True)
    _, b = cs.update(cs.start(), weight=rng.choice([0.0, 10.0], 400), baseline_weight=np.full(400, 1 / 0.9),
                     outcomes=q, q_hat=(q, np.full((400, 1), 0.6), np.full((400, 1), 0.5)))
    np.testing.assert_allclose(b.estimate[:, 0], 0.1)


@pytest.mark.parametrize(("doubly_robust", "q_hat", "match"), [
    (True, None, "needs q_hat"),
    (True, ([[1.5]], [[0.5]], [[0.5]]), r"q_hat of the logged arm outside the metric's known range"),
    (True, ([[0.5]], [[0.5, 0.5]], [[0.5]]), r"q_hat of the policy must have shape \(1, 1\)"),
    (False, ([[0.5]], [[0.5]], [[0.5]]), "not doubly_robust"),
])
def test_doubly_robust_refuses_bad_q_hat(doubly_robust: bool, q_hat: tuple | None, match: str) -> None:
    cs = CanaryCS(alpha=0.05, share=0.5, metric_high=(1.0,), doubly_robust=doubly_robust)
    with pytest.raises(EstimatorInputError, match=match):
        cs.update(cs.start(), weight=[1.0], baseline_weight=[1.0], outcomes=[[0.5]], q_hat=q_hat)
