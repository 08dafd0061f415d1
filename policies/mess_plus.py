"""MESS+: the virtual-queue router that keeps a satisfaction target at the lowest cost it can.

For each request t, in arrival order, with the virtual queue Q_t (Q_1 = 0):

    explore with probability  p_t = min(1, c / t^(1/5))      (uniform over the eligible arms)
    otherwise route to        argmin_a  V · cost_a(x_t) / u − Q_t · ŝ_a(x_t)    (eligible a)
    then                      Q_{t+1} = max(0, Q_t + w_t · (α − s_t))

with ŝ and cost the predicted expected satisfaction and cost q̂, α = ``min_satisfaction``, s_t the
satisfaction of the served request, w_t its sample weight over the mean weight (a logged row
stands for w_t requests) and u the cost unit (typical expected cost of a request, so that V is
free of currency: V = 1 trades one typical request's cost against one unit of Q · ŝ). The queue
is a running count of the satisfaction owed: Σ_t w_t (α − s_t) ≤ Q_T, so the long-run mean
satisfaction misses α by at most Q_T / Σ w_t, which vanishes while the target is reachable.

Two uses, one algorithm:

- **online** (`MessPlus.online`, for `estimators.Replay`): s_t is the satisfaction observed on
  the rows Replay accepts (q̂ of the served arm where an ok row has no feedback); the step t counts
  the requests served so far, so the schedule and the queue advance on accepted rows only;
- **offline matrix** (`MessPlus.action_probabilities`, for IPS/DR and reports): the router rolls
  forward over the logged requests in time order with the mean-field update
  Q ← max(0, Q + w_t (α − Σ_a π_t(a) ŝ_a)), so the (n, K) matrix is a deterministic function of the
  data and q̂.

Notes
-----
Woisetschläger et al., "MESS+: Energy-optimal inferencing in language model zoos with service
level guarantees" (2024/2025). Differences from the paper: the paper minimises energy and, when it
explores, queries every model to train its satisfaction predictor online; here the cost is USD, the
predictor is the cross-fitted q̂ (fitted beforehand, not updated online), and exploring serves one
arm drawn uniformly from the eligible ones, which keeps the policy evaluable (each eligible arm
gets at least p_t / |E_t|). Exact ties in the score are split evenly.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from policies.base import BasePolicy, DeclaredTarget, FloatArray, PolicyError, settings_of, uniform_over
from policies.stream import IntArray, RequestStream

if TYPE_CHECKING:
    from policies.context import RoutingContext

__all__ = ["MessPlus", "MessPlusOnline", "MessPlusState"]

@dataclass(slots=True)
class MessPlusState:
    """The router's state: virtual queue Q, requests served, cost unit u (USD), weight unit (mean sample weight)."""

    queue: float
    steps: int
    cost_unit: float
    weight_unit: float


@dataclass(kw_only=True)
class MessPlus(BasePolicy):
    """Cheapest routing that keeps mean satisfaction ≥ ``min_satisfaction`` through a virtual queue.

    ``V`` weighs cost against the queue (larger: cheaper, slower to react); ``c`` scales the
    exploration probability min(1, c / t^(1/5)). ``fit`` rolls the router over the requests and
    keeps the final state in ``state_`` and the predicted means in ``values_``; routing always
    starts from ``start_`` (a fresh queue unless made by `resumed`).
    """

    name: str = "mess_plus"
    min_satisfaction: float = 0.75
    V: float = 1.0
    c: float = 0.1
    needs_q_hat: ClassVar[bool] = True
    learns: ClassVar[bool] = True
    online: ClassVar[bool] = True
    start_: MessPlusState | None = field(default=None, init=False, repr=False)
    state_: MessPlusState | None = field(default=None, init=False, repr=False)
    values_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _cache: tuple[object, object, FloatArray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                msg = f"The '{key}' parameter of MessPlus must be {expected}. Got {getattr(self, key)!r} instead."
                raise ValueError(msg)

        def number(x: object) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

        check("min_satisfaction", number(self.min_satisfaction) and 0 <= self.min_satisfaction <= 1, "a float in [0, 1]")
        check("V", number(self.V) and self.V >= 0, "a finite float >= 0")
        check("c", number(self.c) and self.c >= 0, "a finite float >= 0")

    def targets(self) -> tuple[DeclaredTarget, ...]:
        """α: the long-run mean satisfaction it owes."""
        return (DeclaredTarget("min_satisfaction", "satisfaction", float(self.min_satisfaction), -1.0),)

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> MessPlus:
        """Roll the router over the requests in time order; keep its final state and predicted means."""
        stream = RequestStream.of(dataset, q_hat, f"MessPlus '{self.name}'")
        pi, self.state_ = self._rollout(stream)
        v = stream.weight / stream.weight.sum()
        self.values_ = dict(zip(stream.metrics, map(float, np.einsum("i,ik,ikm->m", v, pi, stream.q)), strict=True))
        self._cache = (dataset, q_hat, pi)
        best = float(v @ np.where(stream.eligible, stream.metric("satisfaction"), -np.inf).max(axis=1))
        if best < self.min_satisfaction:
            msg = (f"MessPlus '{self.name}': the target misses min_satisfaction = {self.min_satisfaction:g}: the best "
                   f"reachable mean satisfaction on these requests is {best:.4g}, so the queue grows without bound.")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return self

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        """π(a|x) of the mean-field rollout from ``start_``, shape (n, K), rows in dataset order."""
        if self._cache is not None and self._cache[0] is dataset and self._cache[1] is q_hat:
            return self._cache[2].copy()
        return self._rollout(RequestStream.of(dataset, q_hat, f"MessPlus '{self.name}'"))[0]

    def online_learner(self, dataset: RoutingContext, q_hat: FloatArray | None = None, *,
               order: IntArray | None = None) -> MessPlusOnline:
        """A learner for `estimators.Replay`: its row t is dataset row ``order[t]`` (default: time order)."""
        stream = RequestStream.of(dataset, q_hat, f"MessPlus '{self.name}'", order)
        return MessPlusOnline(self, stream, self._start(stream))

    def resumed(self) -> MessPlus:
        """A copy that starts where the fitted rollout ended (to route later requests)."""
        if self.state_ is None:
            raise PolicyError(f"MessPlus '{self.name}' is not fitted: call fit(dataset, q_hat) or from_json first.")
        out = replace(self)
        out.start_, out.state_ = replace(self.state_), replace(self.state_)
        return out

    def to_json(self) -> str:
        """Settings, start and final state, predicted means; `from_json` routes identically."""
        data = {"kind": "mess_plus", "format": 1, "settings": {k: getattr(self, k) for k in settings_of(type(self))},
                "start": _state_dict(self.start_), "state": _state_dict(self.state_), "values": self.values_}
        return json.dumps(data, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> MessPlus:
        """A router from `to_json` text."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") != "mess_plus" or data.get("format") != 1:
            raise PolicyError("Not a MESS+ router: expected JSON with kind 'mess_plus' and format 1.")
        router = cls(**data["settings"])
        router.start_ = None if data["start"] is None else MessPlusState(**data["start"])
        router.state_ = None if data["state"] is None else MessPlusState(**data["state"])
        router.values_ = data["values"]
        return router

    def exploration(self, step: IntArray | int) -> FloatArray:
        """p_t = min(1, c / t^(1/5)) for 1-based step t."""
        return np.minimum(1.0, self.c / np.asarray(step, dtype=np.float64) ** 0.2)

    def _start(self, stream: RequestStream) -> MessPlusState:
        return replace(self.start_) if self.start_ is not None else MessPlusState(0.0, 0, stream.typical("cost_usd"),
                                                                                    float(stream.weight.mean()))

    def _rollout(self, stream: RequestStream) -> tuple[FloatArray, MessPlusState]:
        """The mean-field rollout: one pass in time order, O(1) Python work per eligible pair."""
        state = self._start(stream)
        rows, cols = np.nonzero(stream.eligible)
        starts = np.searchsorted(rows, np.arange(stream.n + 1)).tolist()
        sat = stream.metric("satisfaction")[rows, cols]
        cost = (self.V / state.cost_unit * stream.metric("cost_usd")[rows, cols]).tolist()
        explore_sat = (np.bincount(rows, sat, stream.n) / np.bincount(rows, minlength=stream.n)).tolist()
        p = self.exploration(state.steps + 1 + np.arange(stream.n))
        weight, s = (stream.weight / state.weight_unit).tolist(), sat.tolist()
        alpha, queue = self.min_satisfaction, state.queue
        chosen: list[list[int]] = [[] for _ in range(stream.n)]
        for k, i in enumerate(stream.order.tolist()):
            lo, hi = starts[i], starts[i + 1]
            scores = [cost[j] - queue * s[j] for j in range(lo, hi)]
            best = min(scores)
            win = [lo + j for j, x in enumerate(scores) if x <= best + 1e-12 * (abs(best) + 1e-300)]
            chosen[i] = win
            greedy = sum(s[j] for j in win) / len(win)
            pk = float(p[k])
            queue = max(0.0, queue + weight[i] * (alpha - (pk * explore_sat[i] + (1.0 - pk) * greedy)))
        pi = np.zeros(stream.eligible.shape)
        pairs = np.fromiter((j for win in chosen for j in win), dtype=np.int64)
        share = np.repeat([1.0 / len(win) for win in chosen], [len(win) for win in chosen])
        p_row = np.empty(stream.n)
        p_row[stream.order] = p
        pi[rows[pairs], cols[pairs]] = (1.0 - p_row[rows[pairs]]) * share
        pi += p_row[:, None] * uniform_over(stream.eligible)
        return pi, MessPlusState(queue, state.steps + stream.n, state.cost_unit, state.weight_unit)




def _state_dict(state: MessPlusState | None) -> dict[str, float] | None:
    return None if state is None else asdict(state)


class MessPlusOnline:
    """MESS+ learning online from the rows Replay shows it (`estimators.replay.OnlinePolicy`)."""

    def __init__(self, router: MessPlus, stream: RequestStream, state: MessPlusState) -> None:
        self.router, self.stream, self.state = router, stream, state
        self._sat = stream.metrics.index("satisfaction")
        self._cost = stream.metric("cost_usd") * (router.V / state.cost_unit)
        self._ssat = stream.metric("satisfaction")

    def probabilities(self, t: int, eligible: npt.NDArray[np.bool_]) -> FloatArray:
        """p_t uniform over ``eligible`` plus 1 − p_t on the best score (ties split evenly)."""
        i = int(self.stream.order[t])
        p = float(self.router.exploration(self.state.steps + 1))
        score = np.where(eligible, self._cost[i] - self.state.queue * self._ssat[i], np.inf)
        best = score.min()
        win = eligible & (score <= best + 1e-12 * (abs(best) + 1e-300))
        n_el, n_win = eligible.sum(), win.sum()
        return np.where(eligible, p / n_el, 0.0) + np.where(win, (1.0 - p) / n_win, 0.0)

    def update(self, t: int, arm: int, reward: FloatArray) -> None:
        """Q ← max(0, Q + w (α − s)) with the observed satisfaction (q̂ where the row has none)."""
        i = int(self.stream.order[t])
        s = float(reward[self._sat]) if np.ndim(reward) and np.isfinite(reward[self._sat]) else float(self._ssat[i, arm])
        w = self.stream.weight[i] / self.state.weight_unit
        self.state.queue = max(0.0, self.state.queue + w * (self.router.min_satisfaction - s))
        self.state.steps += 1
