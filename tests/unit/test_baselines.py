"""Baseline routers at the eligible pairs (`policies.base.Pairs`) against a row-by-row reference, and sparse targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    BanditFeedback,
    DRos,
    EstimatorInputError,
    EstimatorSupportError,
    SparseTarget,
    SwitchDR,
)
from ope.data.dataset import BanditDataset
from policies.base import BasePolicy, Pairs, spread
from policies.baselines import Cheapest, DirectOfficial, Fastest, Mixture, PriceWeighted, Uniform, blended_price


@pytest.fixture(scope="module")
def ds(simulated: tuple[Path, Path]) -> BanditDataset:
    logs, catalog = simulated
    return BanditDataset.load(logs, catalog, sla_latency_ms=10_000.0)


def _lowest(scores: list[float]) -> np.ndarray:
    """Mass split evenly over the lowest scores of one row (the reference, one row at a time)."""
    best = min(scores)
    ties = np.array([s <= best + 1e-9 * abs(best) for s in scores], dtype=float)
    return ties / ties.sum()


def _reference(policy: Any, ds: BanditDataset) -> np.ndarray:
    """π (n, K) of a baseline, computed request by request in plain Python."""
    official = ds.catalog.arms_frame["official"].to_list()
    out = np.zeros((ds.n, ds.catalog.n_arms))
    tasks, tokens_in = ds.logs["task"].to_list(), ds.logs["input_tokens"].to_list()

    def cheapest(i: int, arms: list[int], expected_output: dict[str, float]) -> np.ndarray:
        tokens_out = expected_output.get(tasks[i], float(np.median(list(expected_output.values()))))
        return _lowest([tokens_in[i] * ds.price_in[i, a] + tokens_out * ds.price_out[i, a] for a in arms])

    for i in range(ds.n):
        arms = [int(a) for a in np.flatnonzero(ds.eligible[i])]
        if isinstance(policy, Uniform):
            row = np.full(len(arms), 1 / len(arms))
        elif isinstance(policy, Cheapest):
            row = cheapest(i, arms, policy.expected_output_)
        elif isinstance(policy, Fastest):
            row = _lowest([policy.median_latency_.get(ds.arms[a], np.inf) for a in arms])
        elif isinstance(policy, PriceWeighted):
            price = np.array([blended_price(ds.price_in[i, a], ds.price_out[i, a]) for a in arms])
            row = (price <= 0) / (price <= 0).sum() if (price <= 0).any() else price**-2.0 / (price**-2.0).sum()
        elif isinstance(policy, DirectOfficial):
            mine = np.array([official[a] for a in arms], dtype=float)
            row = mine / mine.sum() if mine.any() else cheapest(i, arms, policy.fallback_output_)
        else:
            raise AssertionError(policy)
        out[i, arms] = row
    return out


BASELINES = [Uniform, Cheapest, Fastest, PriceWeighted, lambda: DirectOfficial(fallback="cheapest")]


@pytest.mark.parametrize("make", BASELINES, ids=["uniform", "cheapest", "fastest", "price_weighted", "direct_official"])
def test_baselines_equal_a_request_by_request_reference(ds: BanditDataset, make: Any) -> None:
    policy = make().fit(ds)
    pairs = Pairs.of(ds.eligible)
    want = _reference(policy, ds)
    np.testing.assert_allclose(policy.action_probabilities(ds), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(policy.pair_probabilities(ds, pairs), want[pairs.rows, pairs.arms], rtol=1e-12, atol=1e-15)
    if isinstance(policy, DirectOfficial):
        no_official = ~(ds.eligible & ds.catalog.arms_frame["official"].to_numpy()).any(axis=1)
        assert policy.n_fallback_ == int(no_official.sum()) > 0  # the fallback is exercised
    mixed = Mixture(policy=policy, epsilon=0.2)
    explore = 0.2 * ds.eligible / ds.eligible.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(mixed.action_probabilities(ds), 0.8 * want + explore, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mixed.pair_probabilities(ds, pairs), (0.8 * want + explore)[pairs.rows, pairs.arms], rtol=1e-12, atol=1e-15)


def test_spread_splits_ties_evenly_among_the_lowest_eligible_scores() -> None:
    scores = np.array([[3.0, 1.0, 1.0, 0.5], [2.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    eligible = np.array([[True, True, True, False], [True, False, True, False], [False, False, False, False]])
    want = np.array([[0.0, 0.5, 0.5, 0.0], [0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(spread(scores, eligible), want)


class _MatrixOnly(BasePolicy):
    """A policy that gives only its (n, K) matrix: all mass on each request's last eligible arm."""

    name = "matrix_only"

    def action_probabilities(self, dataset: BanditDataset, q_hat: np.ndarray | None = None) -> np.ndarray:
        last = dataset.eligible.shape[1] - 1 - np.argmax(dataset.eligible[:, ::-1], axis=1)
        out = np.zeros(dataset.eligible.shape)
        out[np.arange(dataset.n), last] = 1.0
        return out


def test_mixture_of_a_policy_without_pair_probabilities_reads_its_matrix(ds: BanditDataset) -> None:
    mixed = Mixture(policy=_MatrixOnly(), epsilon=0.1)
    pairs = Pairs.of(ds.eligible)
    dense = mixed.action_probabilities(ds)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(mixed.pair_probabilities(ds, pairs), dense[pairs.rows, pairs.arms])


def _log(seed: int = 0, n: int = 2_000, k: int = 12) -> tuple[BanditFeedback, np.ndarray, np.ndarray, np.ndarray]:
    """A log on 2–4 eligible arms of 12 per row, with a target, a baseline and q̂ (2 metrics)."""
    rng = np.random.default_rng(seed)
    eligible = np.zeros((n, k), dtype=bool)
    for i in range(n):
        eligible[i, rng.choice(k, size=rng.integers(2, 5), replace=False)] = True
    logging = eligible / eligible.sum(axis=1, keepdims=True)
    actions = np.array([rng.choice(k, p=p) for p in logging])
    target = eligible * rng.random((n, k))
    target /= target.sum(axis=1, keepdims=True)
    baseline = np.where(eligible, logging, 0.0)
    fb = BanditFeedback(actions=actions, rewards=rng.random((n, 2)), propensities=logging[np.arange(n), actions],
                        eligible=eligible, sample_weight=rng.uniform(0.5, 2.0, n))
    return fb, target, baseline, rng.random((n, k, 2))


def test_estimates_of_a_target_at_its_eligible_pairs_equal_the_textbook_sums() -> None:
    """IPS and DR values by hand (sample-weighted means), from a target given at every eligible pair, zeros included."""
    fb, target, _, q = _log(seed=2)
    rows, arms = np.nonzero(fb.eligible)
    target[0] = 0.0
    target[0, arms[rows == 0][0]] = 1.0                      # a row with explicit zeros at eligible pairs
    sp = SparseTarget(rows, arms, target[rows, arms], target.shape)
    s, i = fb.weights, np.arange(fb.n)
    w = target[i, fb.actions] / fb.propensities
    ips = (s[:, None] * w[:, None] * fb.rewards).sum(axis=0) / s.sum()
    dr_rows = np.einsum("nk,nkm->nm", target, q) + w[:, None] * (fb.rewards - q[i, fb.actions])
    np.testing.assert_allclose(IPS().estimate(fb, target=sp).value, ips, rtol=1e-12)
    np.testing.assert_allclose(DR().estimate(fb, target=sp, q_hat=q).value, (s[:, None] * dr_rows).sum(axis=0) / s.sum(), rtol=1e-12)


def test_q_hat_off_the_eligible_set_is_never_read() -> None:
    """Not even where a target puts rounding-level mass off the eligible set (tolerated up to 1e-9 a row)."""
    fb, target, _, q = _log(seed=3)
    q_bad = np.where(fb.eligible[:, :, None], q, np.nan)
    off = np.flatnonzero(~fb.eligible[0])[0]
    stray = target.copy()
    stray[0, off] = 1e-12
    stray[0] /= stray[0].sum()
    for est in (DM(), DR(), SwitchDR(threshold="auto")):
        got = est.estimate(fb, target=stray, q_hat=q_bad).value
        np.testing.assert_allclose(got, est.estimate(fb, target=stray, q_hat=np.nan_to_num(q_bad)).value, rtol=1e-12)
        assert np.isfinite(got).all()


@pytest.mark.parametrize("estimator", [IPS(), SNIPS(), DM(), DR(), SNDR(), SwitchDR(threshold="auto"), DRos(shrinkage="auto")],
                         ids=lambda e: e.name)
def test_a_sparse_target_gives_the_estimates_of_its_matrix(estimator: Any) -> None:
    fb, target, baseline, q = _log()
    dense = estimator.estimate_difference(fb, target=target, baseline=baseline, q_hat=q)
    sparse = estimator.estimate_difference(fb, target=SparseTarget.of(target), baseline=SparseTarget.of(baseline), q_hat=q)
    for field in ("value", "stderr", "ci_low", "ci_high"):
        np.testing.assert_allclose(getattr(sparse, field), getattr(dense, field), rtol=1e-12, atol=1e-15)


def test_bad_sparse_targets_get_the_errors_of_bad_matrices() -> None:
    fb, target, _, _ = _log(seed=1)
    sp = SparseTarget.of(target)
    bad_shape = SparseTarget(sp.rows, sp.arms, sp.values, (fb.n, fb.n_arms + 1))
    negative = SparseTarget(sp.rows, sp.arms, np.where(np.arange(sp.values.size) == 0, -0.5, sp.values), sp.shape)
    short = SparseTarget(sp.rows, sp.arms, sp.values * 0.9, sp.shape)
    outside_row = np.flatnonzero(~fb.eligible[0])[0]
    moved = SparseTarget(sp.rows, np.where(np.arange(sp.values.size) == 0, outside_row, sp.arms), sp.values, sp.shape)
    swapped = SparseTarget(sp.rows[::-1].copy(), sp.arms[::-1].copy(), sp.values[::-1].copy(), sp.shape)
    twice = SparseTarget(np.r_[sp.rows[:1], sp.rows], np.r_[sp.arms[:1], sp.arms], np.r_[0.0, sp.values], sp.shape)
    beyond = SparseTarget(sp.rows, np.where(np.arange(sp.values.size) == 0, fb.n_arms, sp.arms), sp.values, sp.shape)
    ragged = SparseTarget(sp.rows, sp.arms[:-1], sp.values, sp.shape)
    for bad, match in [(swapped, "sorted by row, then arm, each pair once"), (twice, "each pair once"),
                       (beyond, r"arms in \[0, 12\)"), (ragged, "one length")]:
        with pytest.raises(EstimatorInputError, match=match):
            IPS().estimate(fb, target=bad)
    for bad, error, match in [(bad_shape, EstimatorInputError, "shape"), (negative, EstimatorInputError, "non-negative"),
                              (short, EstimatorInputError, "sum to 1"), (moved, EstimatorSupportError, "outside the eligible set")]:
        with pytest.raises(error, match=match):
            IPS().estimate(fb, target=bad)
        dense = bad.dense() if bad.shape == sp.shape else np.zeros(bad.shape)
        with pytest.raises(error, match=match):
            IPS().estimate(fb, target=dense)
