"""Replay of online policies: Li et al.'s exact-match rule and its non-uniform generalisation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from estimators import IPS, BanditFeedback, Replay


class Fixed:
    """A non-learning policy given as a matrix, to compare replay with IPS."""

    def __init__(self, pi: npt.NDArray[np.float64]) -> None:
        self.pi = pi
        self.updates = 0

    def probabilities(self, t: int, eligible: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        return self.pi[t]

    def update(self, t: int, arm: int, reward: npt.NDArray[np.float64]) -> None:
        self.updates += 1


class GreedyMean:
    """Learns online: plays the arm with the best running mean (ties → lowest index)."""

    def __init__(self, k: int) -> None:
        self.sums = np.zeros(k)
        self.counts = np.zeros(k)

    def probabilities(self, t: int, eligible: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        means = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.inf)
        out = np.zeros(len(means))
        out[int(np.argmax(np.where(eligible, means, -np.inf)))] = 1.0
        return out

    def update(self, t: int, arm: int, reward: npt.NDArray[np.float64]) -> None:
        self.sums[arm] += reward[0]
        self.counts[arm] += 1


def test_uniform_logging_deterministic_policy_keeps_exact_matches(rng: np.random.Generator) -> None:
    n, k = 3000, 3
    a = rng.integers(0, k, n)
    r = rng.random(n) + (a == 2)
    fb = BanditFeedback(actions=a, rewards=r, propensities=np.full(n, 1 / k))
    pi = np.zeros((n, k))
    pi[:, 2] = 1.0
    policy = Fixed(pi)
    res = Replay(scale=k).estimate(fb, policy)
    np.testing.assert_array_equal(res.accepted, a == 2)
    assert policy.updates == res.n_accepted == int((a == 2).sum())
    assert res.value[0] == np.mean(r[a == 2])
    assert res.n_overflow == 0


def test_non_uniform_logging_matches_ips_in_expectation(rng: np.random.Generator) -> None:
    n, k = 20_000, 3
    logger = np.array([0.6, 0.3, 0.1])
    a = rng.choice(k, size=n, p=logger)
    means = np.array([0.2, 0.5, 0.9])
    r = rng.binomial(1, means[a]).astype(float)
    fb = BanditFeedback(actions=a, rewards=r, propensities=logger[a])
    pi = np.tile([0.1, 0.2, 0.7], (n, 1))
    truth = pi[0] @ means
    res = Replay().estimate(fb, Fixed(pi))
    assert abs(res.value[0] - truth) < 4 * res.stderr[0]
    assert abs(IPS().estimate(fb, target=pi).value - truth) < 0.03
    assert 0 < res.acceptance_rate < 1 and res.n_overflow == 0


def test_learning_policy_finds_the_best_arm(rng: np.random.Generator) -> None:
    n, k = 5000, 3
    a = rng.integers(0, k, n)
    r = rng.binomial(1, np.array([0.2, 0.5, 0.8])[a]).astype(float)
    fb = BanditFeedback(actions=a, rewards=r, propensities=np.full(n, 1 / k))
    policy = GreedyMean(k)
    res = Replay(scale=k).estimate(fb, policy)
    assert np.argmax(policy.counts) == 2
    assert res.value[0] > 0.7


def test_replay_is_reproducible_and_counts_overflow(rng: np.random.Generator) -> None:
    n, k = 500, 2
    a = rng.integers(0, k, n)
    fb = BanditFeedback(actions=a, rewards=rng.random(n), propensities=np.full(n, 0.5))
    pi = np.tile([1.0, 0.0], (n, 1))
    first = Replay(scale=1.0).estimate(fb, Fixed(pi))
    again = Replay(scale=1.0).estimate(fb, Fixed(pi))
    np.testing.assert_array_equal(first.accepted, again.accepted)
    assert first.n_overflow == int((a == 0).sum())
