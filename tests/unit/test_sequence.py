"""The anytime-valid confidence sequences: hand values, a loop oracle, batch splits, the canary terms, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimators import EstimatorInputError
from estimators.canary import CanaryCS
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
