"""The policy contract: contexts in, an (n, K) matrix of action probabilities out.

Policies whose probabilities are zero off each request's eligible arms (every policy must be) may
also give them at the eligible (row, arm) pairs alone (`Pairs`, ``pair_probabilities``): a request
has ~5 eligible arms of 58, and a streamed run never needs the (n, K) matrix.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from estimators._errors import OPEError

if TYPE_CHECKING:
    from estimators import OnlinePolicy
    from policies.context import RoutingContext

__all__ = ["policy_from_json", "policy_to_json", "settings_of", "BasePolicy", "DeclaredTarget", "PairwisePolicy", "Pairs", "Policy",
           "PolicyError", "checked_q_hat", "declared_targets", "spread", "uniform_over"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class PolicyError(OPEError):
    """A policy cannot act as asked (no official endpoint, infeasible constraints, ...)."""


@runtime_checkable
class Policy(Protocol):
    """A routing policy: what every run calls, and the capabilities it declares as class attributes.

    ``needs_q_hat``: it routes on the outcome models' predictions q̂ (n, K, M), passed to ``fit`` and
    ``action_probabilities``; the others ignore ``q_hat``. ``learns``: ``fit`` learns from the logged
    rows (so a streamed run that fits on a sample says so). ``online``: it learns in arrival order
    (a run scores it by replay too, through ``online_learner``). ``pairwise``: ``pair_probabilities``
    computes π at the eligible pairs alone, never building the (n, K) matrix. ``n_fallback_``: requests
    its last ``action_probabilities`` routed by its fallback (``fallback_rule`` says how).
    """

    name: str
    needs_q_hat: ClassVar[bool]
    learns: ClassVar[bool]
    online: ClassVar[bool]
    pairwise: ClassVar[bool]
    cross_fit: ClassVar[bool]
    n_fallback_: int
    certificate_: dict[str, object] | None

    def targets(self) -> tuple[DeclaredTarget, ...]:
        """The mean-outcome targets it declares (checked in every run)."""
        ...

    def certify_settings(self) -> tuple[float, int] | None:
        """(α, rounds) when a run should certify its targets on held-out folds (then ``tighten`` makes them stricter)."""
        ...

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> Policy:
        """Learn from the logged requests where the policy learns; return self."""
        ...

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        """π(a|x) for every logged context, shape (n, K), rows sum to 1, zero outside eligible."""
        ...

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        """π at the eligible pairs ``pairs`` (m,)."""
        ...

    @property
    def fallback_rule(self) -> str:
        """How requests it cannot serve as designed are routed (for the run's note)."""
        ...

    def to_json(self) -> str:
        """The fitted policy as JSON (a classmethod ``from_json`` rebuilds it)."""
        ...


@dataclass(frozen=True, slots=True)
class DeclaredTarget:
    """A target a policy promises on a mean outcome: ``sense · mean ≤ sense · target``.

    ``key`` the setting that declares it (``min_satisfaction``), ``metric`` the outcome, ``sense`` −1 for a
    floor (mean ≥ target) and +1 for a cap (mean ≤ target). With ``quantile`` (e.g. 0.95) the target is on that
    quantile of the metric instead of its mean (``max_p95_latency_ms``: p95 ≤ target).
    """

    key: str
    metric: str
    target: float
    sense: float
    quantile: float | None = None

    def met_by(self, value: float) -> bool:
        """Whether ``value`` is on the right side of the target."""
        return bool(self.sense * (value - self.target) <= 0)

    def __str__(self) -> str:
        what = self.metric if self.quantile is None else f"p{round(100 * self.quantile)} {self.metric}"
        return f"{what} {'≥' if self.sense < 0 else '≤'} {self.target:g}"


class BasePolicy:
    """Defaults of the `Policy` contract: a heuristic that does not learn, whose pair probabilities are read
    off its (n, K) matrix. Subclasses override what they do differently.

    Two more capabilities a run asks of any policy (with these defaults where a policy lacks them):
    ``cross_fit`` — ``fit`` optimises on the rows' predicted outcomes, so a run evaluates copies fitted on
    the other folds (`policies.crossfit`); ``targets()`` — the `DeclaredTarget` s the policy promises,
    which every run checks against its estimates.
    """

    needs_q_hat: ClassVar[bool] = False
    learns: ClassVar[bool] = False
    online: ClassVar[bool] = False
    pairwise: ClassVar[bool] = False
    cross_fit: ClassVar[bool] = False
    n_fallback_: int = 0
    certificate_: dict[str, object] | None = None

    def targets(self) -> tuple[DeclaredTarget, ...]:
        """The mean-outcome targets this policy declares (none for a heuristic)."""
        return ()

    def certify_settings(self) -> tuple[float, int] | None:
        """(level α, most re-solves) when a run should certify this policy's targets on held-out folds; None: no."""
        return None

    def tighten(self, shifts: dict[str, float]) -> Self:
        """A copy with each target made stricter by ``shifts`` (policies that certify)."""
        raise PolicyError(f"Policy {type(self).__name__} has no targets to tighten.")

    def predicted_values(self) -> dict[str, float]:
        """What the fitted policy expects of each target's metric on its own predictions (empty: it predicts none)."""
        return {}

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> Self:
        """Nothing to learn."""
        return self

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        raise NotImplementedError

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        """π at the eligible pairs, read off the (n, K) matrix (a ``pairwise`` policy computes them directly)."""
        return np.asarray(self.action_probabilities(dataset, q_hat), dtype=np.float64)[pairs.rows, pairs.arms]

    @property
    def fallback_rule(self) -> str:
        """How requests it cannot serve as designed are routed."""
        return "uniform over the eligible arms"

    def online_learner(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> OnlinePolicy:
        """A learner for `estimators.Replay` (``online`` policies only)."""
        raise PolicyError(f"Policy {type(self).__name__} does not learn online.")

    def to_json(self) -> str:
        """Settings and learned state (attributes ending in ``_``) as JSON; `from_json` rebuilds a policy that routes identically."""
        fitted = {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}
        return json.dumps({"settings": {k: getattr(self, k) for k in settings_of(type(self))}, "fitted": fitted})

    @classmethod
    def from_json(cls, text: str) -> Self:
        """The policy `to_json` wrote."""
        data = json.loads(text)
        policy = cls(**data["settings"])
        for key, value in data["fitted"].items():
            setattr(policy, key, value)
        return policy


class PairwisePolicy(BasePolicy):
    """A policy computed at the eligible pairs alone; its (n, K) matrix is those values scattered."""

    pairwise: ClassVar[bool] = True

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        raise NotImplementedError

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        pairs = Pairs.of(dataset.eligible)
        return pairs.dense(self.pair_probabilities(dataset, pairs, q_hat))


def policy_to_json(policy: Policy) -> str:
    """Any fitted policy as JSON text, with its class (`policy_from_json` rebuilds it)."""
    return json.dumps({"class": f"{type(policy).__module__}:{type(policy).__qualname__}", "json": policy.to_json()})


def policy_from_json(text: str) -> Policy:
    """The policy `policy_to_json` wrote; only classes of this package are rebuilt."""
    data = json.loads(text)
    module, _, qualname = data["class"].partition(":")
    if not module.startswith("policies."):
        raise ValueError(f"Refusing to rebuild a policy of class {data['class']!r}: only classes from policies. are allowed.")
    return getattr(importlib.import_module(module), qualname).from_json(data["json"])  # type: ignore[no-any-return]


def declared_targets(policy: Policy) -> tuple[DeclaredTarget, ...]:
    """A policy's declared targets (`BasePolicy.targets`)."""
    return tuple(policy.targets())


def settings_of(cls: type) -> tuple[str, ...]:
    """A policy class's settings: its dataclass fields set at construction (learned state ends in ``_`` and is not one)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def uniform_over(mask: npt.NDArray[np.bool_]) -> FloatArray:
    """Uniform probabilities over the True entries of each row; rows without any stay zero."""
    inverse = 1.0 / np.maximum(np.count_nonzero(mask, axis=1), 1)
    return np.where(mask, inverse[:, None], 0.0)


@dataclass(frozen=True, slots=True, eq=False)
class Pairs:
    """The eligible (row, arm) pairs of a dataset, row by row: where a policy's probabilities may be non-zero.

    rows, arms (m,) the pairs (rows non-decreasing) · n, n_arms the dense shape · first (R,) where each
    of the R rows that has pairs starts, and ``filled`` (R,) those rows.
    """

    rows: IntArray
    arms: IntArray
    n: int
    n_arms: int
    first: IntArray
    filled: IntArray

    @classmethod
    def of(cls, eligible: npt.NDArray[np.bool_]) -> Pairs:
        """The True entries of an (n, K) eligibility matrix."""
        rows, arms = np.nonzero(eligible)
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if rows.size else np.zeros(0, dtype=np.int64)
        return cls(rows, arms, eligible.shape[0], eligible.shape[1], first, rows[first])

    def row_sum(self, x: FloatArray) -> FloatArray:
        """(n,) sum of a per-pair value over each row's pairs (0 for a row without any)."""
        out = np.zeros(self.n)
        if self.rows.size:
            out[self.filled] = np.add.reduceat(x, self.first)
        return out

    def row_min(self, x: FloatArray) -> FloatArray:
        """(n,) least per-pair value of each row (inf for a row without any)."""
        out = np.full(self.n, np.inf)
        if self.rows.size:
            out[self.filled] = np.minimum.reduceat(x, self.first)
        return out

    def uniform(self, mask: npt.NDArray[np.bool_]) -> FloatArray:
        """Uniform probabilities over each row's pairs where ``mask`` (m,) holds; rows without any stay zero."""
        count = self.row_sum(mask.astype(np.float64))
        return np.where(mask, 1.0 / np.maximum(count, 1.0)[self.rows], 0.0)

    def lowest(self, scores: FloatArray, *, rtol: float = 1e-9) -> FloatArray:
        """Each row's mass on its lowest-score pairs, split evenly among ties (within ``rtol``)."""
        best = self.row_min(scores)[self.rows]
        return self.uniform(scores <= best + rtol * np.abs(best))

    def dense(self, values: FloatArray) -> FloatArray:
        """The (n, K) matrix holding ``values`` at the pairs and 0 elsewhere."""
        out = np.zeros((self.n, self.n_arms))
        out[self.rows, self.arms] = values
        return out


def spread(scores: FloatArray, eligible: npt.NDArray[np.bool_], *, rtol: float = 1e-9) -> FloatArray:
    """Put each row's mass on its lowest-score eligible arms, split evenly among ties (an (n, K) matrix)."""
    pairs = Pairs.of(eligible)
    return pairs.dense(pairs.lowest(np.broadcast_to(scores, eligible.shape)[pairs.rows, pairs.arms], rtol=rtol))


def checked_q_hat(dataset: RoutingContext, q_hat: FloatArray | None, who: str) -> FloatArray:
    """q̂ (n, K, M) checked against the dataset for a policy that routes on it; non-finite values off the eligible set become 0."""
    if q_hat is None:
        msg = f"{who} routes on predicted outcomes: pass q_hat (n, K, M), e.g. fit_outcome_models(dataset).q_hat."
        raise PolicyError(msg)
    q = np.asarray(q_hat, dtype=np.float64)
    expected = (dataset.n, len(dataset.arms), len(dataset.metrics))
    if q.shape != expected:
        raise PolicyError(f"{who}: q_hat must have shape {expected} (n, K, M). Got {q.shape}.")
    finite = np.isfinite(q).all(axis=2)
    if (bad := ~finite & dataset.eligible).any():
        raise PolicyError(f"{who}: q_hat is not finite on {int(bad.sum())} eligible pairs.")
    return q if finite.all() else np.where(finite[..., None], q, 0.0)  # anything may stand outside eligible
