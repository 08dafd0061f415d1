"""A learned policy as a run evaluates it: each request routed by a copy that was fitted without it.

A policy that optimises on the rows' predicted outcomes (the constrained router) exploits the errors
of those predictions on the very rows it is fitted on; evaluated there, the policy's errors and the
estimate's are correlated. `cross_fit` fits one copy per fold on the other folds' rows and
`CrossFitted` routes every request with the copy of its own fold. Folds come from the row key
(``key mod k``, the rule `ope.models.predictors.assign_folds` uses), so a request is assigned the same
fold in memory, in any streamed batch and on any worker, and a request outside the fitted rows (a
streamed run fits on a sample) is routed by a copy that never saw it either. The rule one deploys is
the policy fitted on every row (``deployed``), which is what it reports for ``to_json``-style outputs.

An online router (MESS+, StageRoute) cannot be fitted on a subset: its rollout walks every request in
arrival order. `cross_fit_rollouts` rolls one copy over the whole log per fold, each reading only the
predictions of the models fitted without that fold, and keeps each copy's probabilities on its own fold's
requests (`RolledOut`): no request's probabilities depend on its own outcome, and the order is intact.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from policies.base import (
    BasePolicy,
    DeclaredTarget,
    FloatArray,
    Pairs,
    Policy,
    PolicyError,
    declared_targets,
    policy_from_json,
    policy_to_json,
)

if TYPE_CHECKING:
    from ope.data.dataset import BanditDataset

__all__ = ["CrossFitted", "RolledOut", "cross_fit", "cross_fit_rollouts", "key_folds"]


def key_folds(keys: npt.NDArray[np.uint64], folds: int) -> npt.NDArray[np.int64]:
    """Fold of every row from its key: ``key mod folds``."""
    return (np.asarray(keys, dtype=np.uint64) % np.uint64(folds)).astype(np.int64)


def cross_fit(policy: Policy, dataset: BanditDataset, q_hat: FloatArray | None, folds: int) -> list[Policy]:
    """``folds`` unfitted copies of ``policy``, copy f fitted on the rows outside fold f."""
    fold = key_folds(dataset.keys, folds)
    out = []
    for f in range(folds):
        train = fold != f
        out.append(copy.deepcopy(policy).fit(dataset.subset(train), None if q_hat is None else q_hat[train]))
    return out


class CrossFitted(BasePolicy):
    """Route each request with the fold copy that never saw it; ``deployed`` is the policy fitted on every row.

    Capabilities, name, fallback rule and targets are the deployed policy's.
    """

    def __init__(self, deployed: Policy, folds: list[Policy]) -> None:
        if len(folds) < 2:
            raise ValueError(f"CrossFitted needs at least 2 fold copies. Got {len(folds)}.")
        self.deployed, self.folds, self.name = deployed, list(folds), deployed.name
        self.n_fallback_ = 0

    @property  # type: ignore[misc]
    def needs_q_hat(self) -> bool:  # type: ignore[override]
        return self.deployed.needs_q_hat

    @property  # type: ignore[misc]
    def learns(self) -> bool:  # type: ignore[override]
        return self.deployed.learns

    @property
    def fallback_rule(self) -> str:
        return self.deployed.fallback_rule

    def targets(self) -> tuple[DeclaredTarget, ...]:
        return declared_targets(self.deployed)

    def fit(self, dataset: BanditDataset, q_hat: FloatArray | None = None) -> CrossFitted:
        """Refit every fold copy and the deployed policy on ``dataset``."""
        self.folds = cross_fit(self.deployed, dataset, q_hat, len(self.folds))
        self.deployed.fit(dataset, q_hat)
        return self

    def pair_probabilities(self, dataset: BanditDataset, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        """π at the eligible pairs, each row's from the copy of its fold."""
        fold = key_folds(dataset.keys, len(self.folds))
        values = np.zeros(pairs.rows.size)
        self.n_fallback_ = 0
        for f, policy in enumerate(self.folds):
            rows = fold == f
            if not rows.any():
                continue
            sub = dataset.subset(rows)
            values[rows[pairs.rows]] = policy.pair_probabilities(sub, Pairs.of(sub.eligible), None if q_hat is None else q_hat[rows])
            self.n_fallback_ += policy.n_fallback_
        return values

    def action_probabilities(self, dataset: BanditDataset, q_hat: FloatArray | None = None) -> FloatArray:
        pairs = Pairs.of(dataset.eligible)
        return pairs.dense(self.pair_probabilities(dataset, pairs, q_hat))

    def to_json(self) -> str:
        """The deployed policy and every fold copy (`policies.base.policy_to_json` each)."""
        return json.dumps({"deployed": policy_to_json(self.deployed), "folds": [policy_to_json(p) for p in self.folds]})

    @classmethod
    def from_json(cls, text: str) -> CrossFitted:
        data = json.loads(text)
        return cls(policy_from_json(data["deployed"]), [policy_from_json(p) for p in data["folds"]])


def cross_fit_rollouts(policy: Policy, dataset: BanditDataset, q_hat: FloatArray, fold: npt.NDArray[np.int64],
                       fold_q_hat: Callable[[int], FloatArray]) -> RolledOut:
    """Fit ``policy`` on ``q_hat`` (the deployed rule), and roll one copy over every row per fold ``f`` on
    ``fold_q_hat(f)`` (predictions that never saw fold f's outcomes); row i takes its fold's copy's probabilities."""
    values = np.zeros((dataset.n, dataset.eligible.shape[1]))
    for f in np.unique(fold).tolist():
        q_f = fold_q_hat(f)
        rows = fold == f
        values[rows] = copy.deepcopy(policy).fit(dataset, q_f).action_probabilities(dataset, q_f)[rows]
    return RolledOut(policy.fit(dataset, q_hat), values, np.asarray(dataset.keys), int(np.unique(fold).size))


class RolledOut(BasePolicy):
    """An online router as a run evaluates it: the fold-wise rollouts' probabilities on the log they were
    rolled over (`cross_fit_rollouts`); ``deployed`` is the router fitted on every row's out-of-fold q̂."""

    def __init__(self, deployed: Policy, probabilities: FloatArray, keys: npt.NDArray[np.uint64], folds: int) -> None:
        self.deployed, self.probabilities, self.keys, self.folds = deployed, probabilities, keys, folds
        self.name, self.n_fallback_ = deployed.name, 0

    @property  # type: ignore[misc]
    def needs_q_hat(self) -> bool:  # type: ignore[override]
        return self.deployed.needs_q_hat

    @property
    def fallback_rule(self) -> str:
        return self.deployed.fallback_rule

    def targets(self) -> tuple[DeclaredTarget, ...]:
        return declared_targets(self.deployed)

    def pair_probabilities(self, dataset: BanditDataset, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        """π at the eligible pairs of the log the rollouts walked (and of no other: the rollouts are of that log)."""
        if dataset.n != self.keys.size or not np.array_equal(dataset.keys, self.keys):
            raise PolicyError(f"'{self.name}': fold-wise rollouts hold the probabilities of the {self.keys.size:,} requests "
                              f"they walked, not of these {dataset.n:,}.")
        return self.probabilities[pairs.rows, pairs.arms]

    def action_probabilities(self, dataset: BanditDataset, q_hat: FloatArray | None = None) -> FloatArray:
        pairs = Pairs.of(dataset.eligible)
        return pairs.dense(self.pair_probabilities(dataset, pairs, q_hat))

    def to_json(self) -> str:
        """The deployed router (what one would run); the rollouts' probabilities are in the run's action files."""
        return policy_to_json(self.deployed)
