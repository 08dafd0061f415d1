"""`BanditFeedback`: the validated arrays every estimator works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError

__all__ = ["BanditFeedback"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True, kw_only=True)
class BanditFeedback:
    """Logged bandit feedback: who acted how, what it earned, and with what probability.

    Parameters
    ----------
    actions
        Arm index of each logged row, shape (n,).
    rewards
        Observed outcome, shape (n,) or (n, M) for M metrics. NaN marks a missing outcome:
        that metric is evaluated on the rows that have it.
    propensities
        Logging policy's probability of the logged arm, shape (n,), in (0, 1].
    eligible
        Arms each row could have been routed to, shape (n, K) bool, or None (all arms).
    sample_weight
        How many requests each row stands for (1 / its sampling probability), shape (n,) > 0,
        or None (all 1). Every estimator and interval weights rows by it.
    logging_probabilities
        The logging policy's full action distribution, shape (n, K), when known (a simulator,
        a reconstructed router); used only for support diagnostics.
    keys
        A per-row uint64 key (e.g. a hash of the request id), shape (n,); bootstrap multipliers
        derive from it so that they do not depend on how rows are split. Default: row index.
    n_arms
        K; inferred from ``eligible`` or the largest action when not given.
    """

    actions: IntArray
    rewards: FloatArray
    propensities: FloatArray
    eligible: BoolArray | None = None
    sample_weight: FloatArray | None = None
    logging_probabilities: FloatArray | None = None
    keys: npt.NDArray[np.uint64] | None = None
    n_arms: int | None = None
    scalar: bool = field(init=False)

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions)
        if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
            msg = f"actions must be a 1-d integer array. Got shape {actions.shape}, dtype {actions.dtype}."
            raise EstimatorInputError(msg)
        n = actions.shape[0]
        if n == 0:
            raise EstimatorInputError("BanditFeedback needs at least one row. Got 0 rows.")
        rewards, scalar = _rewards(self.rewards, n)
        p = _propensities(self.propensities, n)
        sw = None
        if self.sample_weight is not None:
            sw = _vector("sample_weight", self.sample_weight, n)
            if not (np.isfinite(sw) & (sw > 0)).all():
                raise EstimatorInputError("sample_weight must be finite and > 0 on every row.")
        elig, k = _eligible(self.eligible, actions, self.n_arms)
        lp = None
        if self.logging_probabilities is not None:
            lp = np.asarray(self.logging_probabilities, dtype=np.float64)
            if lp.shape != (n, k):
                raise EstimatorInputError(f"logging_probabilities must have shape {(n, k)}. Got {lp.shape}.")
        keys = np.arange(n, dtype=np.uint64) if self.keys is None else np.asarray(self.keys, dtype=np.uint64)
        if keys.shape != (n,):
            raise EstimatorInputError(f"keys must have shape ({n},). Got {keys.shape}.")
        for name, value in [
            ("actions", actions.astype(np.int64, copy=False)),
            ("rewards", rewards),
            ("propensities", p),
            ("eligible", elig),
            ("sample_weight", sw),
            ("logging_probabilities", lp),
            ("keys", keys),
            ("n_arms", k),
            ("scalar", scalar),
        ]:
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        """Number of logged rows."""
        return int(self.actions.shape[0])

    @property
    def n_metrics(self) -> int:
        """Number of reward columns M."""
        return int(self.rewards.shape[1])

    @property
    def weights(self) -> FloatArray:
        """Row weights (n,): the sample weights, or ones."""
        return np.ones(self.n) if self.sample_weight is None else self.sample_weight

    def subset(self, rows: npt.NDArray[Any]) -> BanditFeedback:
        """The feedback restricted to ``rows`` (a boolean mask or indices), e.g. one day."""
        pick = (lambda x: None if x is None else x[rows])  # noqa: E731
        return BanditFeedback(
            actions=self.actions[rows],
            rewards=self.rewards[rows, 0] if self.scalar else self.rewards[rows],
            propensities=self.propensities[rows],
            eligible=pick(self.eligible),
            sample_weight=pick(self.sample_weight),
            logging_probabilities=pick(self.logging_probabilities),
            keys=self.keys[rows],
            n_arms=self.n_arms,
        )

    @classmethod
    def from_obp(cls, bandit_feedback: dict[str, Any], action_dist: npt.NDArray[Any] | None = None) -> BanditFeedback:
        """Build feedback from an Open Bandit Pipeline ``bandit_feedback`` dict.

        ``action_dist`` (n, K, 1), OBP's evaluation-policy array, is checked against the feedback's
        shape; pass ``action_dist[:, :, 0]`` as the ``target`` of an estimator. Only single-position
        feedback is supported; slates raise an error. OBP's ``pi_b`` becomes ``logging_probabilities``.
        """
        position = bandit_feedback.get("position")
        if position is not None and np.any(np.asarray(position) != 0):
            raise EstimatorInputError("Only single-position OBP feedback is supported (position must be all 0).")
        n_arms = int(bandit_feedback["n_actions"])
        n = len(bandit_feedback["action"])
        if action_dist is not None and np.asarray(action_dist).shape[:2] != (n, n_arms):
            msg = f"action_dist must have shape ({n}, {n_arms}, 1). Got {np.asarray(action_dist).shape}."
            raise EstimatorInputError(msg)
        pi_b = bandit_feedback.get("pi_b")
        return cls(
            actions=np.asarray(bandit_feedback["action"], dtype=np.int64),
            rewards=np.asarray(bandit_feedback["reward"], dtype=np.float64),
            propensities=np.asarray(bandit_feedback["pscore"], dtype=np.float64),
            logging_probabilities=None if pi_b is None else np.asarray(pi_b)[:, :, 0],
            n_arms=n_arms,
        )


def _vector(name: str, values: npt.ArrayLike, n: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        msg = f"{name} must have shape ({n},). Got {arr.shape}."
        raise EstimatorInputError(msg)
    if np.isnan(arr).any():
        rows = np.flatnonzero(np.isnan(arr))[:5].tolist()
        msg = f"{name} must not contain NaN. {int(np.isnan(arr).sum())} rows do (first rows {rows})."
        raise EstimatorInputError(msg)
    return arr


def _rewards(values: npt.ArrayLike, n: int) -> tuple[FloatArray, bool]:
    """Rewards as (n, M), and whether they were given as (n,)."""
    rewards = np.asarray(values, dtype=np.float64)
    scalar = rewards.ndim == 1
    rewards2 = rewards[:, None] if scalar else rewards
    if rewards2.ndim != 2 or rewards2.shape[0] != n:
        raise EstimatorInputError(f"rewards must have shape (n,) or (n, M) with n = {n}. Got {rewards.shape}.")
    if np.isinf(rewards2).any():
        raise EstimatorInputError("rewards must be finite or NaN (missing). Got inf.")
    return rewards2, scalar


def _propensities(values: npt.ArrayLike, n: int) -> FloatArray:
    """Propensities checked to lie in (0, 1]."""
    p = _vector("propensities", values, n)
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise EstimatorInputError(f"propensities must be in (0, 1]. {int(bad.sum())} rows are not (first rows {first}: {p[first].tolist()}).")
    return p


def _eligible(values: npt.ArrayLike | None, actions: npt.NDArray[np.integer], n_arms: int | None) -> tuple[npt.NDArray[np.bool_] | None, int]:
    """The eligibility matrix (or None) and the number of arms, with every logged action an eligible arm index."""
    n, k, elig = actions.shape[0], n_arms, None
    if values is not None:
        elig = np.asarray(values, dtype=bool)
        if elig.ndim != 2 or elig.shape[0] != n:
            raise EstimatorInputError(f"eligible must have shape (n, K) with n = {n}. Got {elig.shape}.")
        k = elig.shape[1] if k is None else k
    k = int(actions.max()) + 1 if k is None else int(k)
    if actions.min() < 0 or actions.max() >= k:
        raise EstimatorInputError(f"actions must be arm indices in [0, {k}). Got values in [{actions.min()}, {actions.max()}].")
    if elig is not None:
        if elig.shape[1] != k:
            raise EstimatorInputError(f"eligible has {elig.shape[1]} arms but n_arms is {k}.")
        off = ~elig[np.arange(n), actions]
        if off.any():
            first = np.flatnonzero(off)[:5].tolist()
            raise EstimatorInputError(f"{int(off.sum())} logged actions are outside their row's eligible set (first rows {first}).")
    return elig, k
