"""StageRoute: deploy a few arms per maintenance window by optimism, route each query by a small LP.

Stages last ``stage_hours`` (aligned to midnight UTC of the first request's day). At a stage's start
the router deploys up to ``max_deployed`` arms per model; each query is then routed among its
eligible deployed arms by the exact solution of

    maximise    Σ_a x_a · UCB_a(x_t)                 (the ``reward`` metric, default satisfaction)
    subject to  Σ_a x_a · LCB_a(x_t) ≤ b_t,         (expected cost, USD)
                Σ_a x_a = 1,   0 ≤ x_a ≤ capacity   (throughput cap: the largest share of queries)

with UCB_a(x) = q̂_r(x, a) + δ_a + scale · w_a and LCB_a(x) = q̂_cost(x, a) · max(0, ρ_a − w_a): q̂
corrected by the arm's feedback (δ_a mean reward residual, ρ_a observed / predicted cost, both
shrunk toward none by ``prior_weight`` pseudo-requests) plus an optimism width
w_a = ``confidence`` · sqrt(ln(e + N) / (prior_weight + n_a)), n_a the weighted requests the arm
served and N = Σ n_a. Untried arms have the widest bounds, so they win deployment until tried.
Deployment solves the same LP per model on the arms' mean bounds over the requests served so far,
deploys its support and fills the other slots by UCB (ties in a ``seed``-ed order).

Budget: b_t = β · m_t, m_t the query's mean q̂ cost over its eligible arms and β = target / mean m
of the requests served so far, so the budgets average the target ``max_cost_usd`` per request while
a large prompt gets a larger budget than a small one. With ``pacing`` the target is lowered by the
overspend so far spread over the last stage's traffic (never below 0). A query whose cheapest
allocation exceeds b_t gets that allocation (counted in ``n_infeasible_``).

Online (``online``, for `estimators.Replay`) the statistics move on accepted rows only; the offline
matrix (``action_probabilities``) is a deterministic mean-field rollout where each request adds
w_t · π_t(a) to n_a with q̂ as the outcome.

Notes
-----
Li & Li, "Near-optimal online deployment and routing for streaming LLMs" (2025, arXiv 2506.17254).
Simplifications relative to the paper:

- bounds are contextual: q̂ (fitted beforehand) is every query's prior mean and the bandit learns a
  per-arm correction, where the paper keeps per-model means of reward and cost;
- bounds are refreshed every ``refresh_minutes`` (the paper: after every query), so a window's
  queries are routed by one vectorised LP solve (and online, a window is routed when its first row
  arrives: the same numbers as one by one);
- the per-query budget is scaled to the query's size (see above) and paced, not a hard total;
- M_max is per model (requests can only go to arms serving their model) and the capacity is one
  share for every arm; a request with no eligible deployed arm uses all its eligible arms
  (``n_fallback_``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from policies.base import BasePolicy, DeclaredTarget, FloatArray, PolicyError, settings_of
from policies.stage_lp import route_lp
from policies.stage_state import StageState
from policies.stream import IntArray, RequestStream

if TYPE_CHECKING:
    from policies.context import RoutingContext

__all__ = ["StageRoute", "StageRouteOnline", "StageState"]

REWARDS = ("satisfaction", "success", "sla_hit", "throughput_tps")
_RATES = ("satisfaction", "success", "sla_hit")


@dataclass(kw_only=True)
class StageRoute(BasePolicy):
    """Stage-wise deployment of up to ``max_deployed`` arms per model, per-query budget LP routing.

    ``max_cost_usd`` the budget per request (None: no budget), ``capacity`` the largest share of
    a model's queries any one arm may take, ``reward`` the metric to maximise, ``confidence`` the
    optimism width, ``seed`` the tie order in deployment. ``fit`` rolls the router over the
    requests and keeps ``state_``, ``values_`` (predicted means), ``deployments_`` (stage start,
    budget, arms), ``n_fallback_`` and ``n_infeasible_``; routing starts from ``start_`` (fresh
    unless made by `resumed`).
    """

    name: str = "stage_route"
    max_cost_usd: float | None = None
    max_deployed: int = 3
    stage_hours: float = 6.0
    refresh_minutes: float = 15.0
    capacity: float = 1.0
    reward: str = "satisfaction"
    confidence: float = 1.0
    prior_weight: float = 10.0
    pacing: bool = True
    seed: int = 0
    needs_q_hat: ClassVar[bool] = True
    learns: ClassVar[bool] = True
    online: ClassVar[bool] = True
    start_: StageState | None = field(default=None, init=False, repr=False)
    state_: StageState | None = field(default=None, init=False, repr=False)
    values_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    deployments_: list[tuple[str, float, tuple[str, ...]]] = field(default_factory=list, init=False, repr=False)
    n_fallback_: int = field(default=0, init=False)
    n_infeasible_: int = field(default=0, init=False)
    _arms: tuple[str, ...] = field(default=(), init=False, repr=False)
    _cache: tuple[object, object, FloatArray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                msg = f"The '{key}' parameter of StageRoute must be {expected}. Got {getattr(self, key)!r} instead."
                raise ValueError(msg)

        def number(x: object) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

        check("max_cost_usd", self.max_cost_usd is None or number(self.max_cost_usd) and self.max_cost_usd >= 0,
              "None or a finite float >= 0")
        check("max_deployed", isinstance(self.max_deployed, int) and not isinstance(self.max_deployed, bool)
              and self.max_deployed >= 1, "an int >= 1")
        check("stage_hours", number(self.stage_hours) and self.stage_hours > 0, "a finite float > 0")
        check("refresh_minutes", number(self.refresh_minutes) and self.refresh_minutes > 0, "a finite float > 0")
        check("capacity", number(self.capacity) and 0 < self.capacity <= 1, "a float in (0, 1]")
        check("reward", self.reward in REWARDS, f"one of {list(REWARDS)}")
        check("confidence", number(self.confidence) and self.confidence >= 0, "a finite float >= 0")
        check("prior_weight", number(self.prior_weight) and self.prior_weight > 0, "a finite float > 0")
        check("pacing", isinstance(self.pacing, bool), "a bool")
        check("seed", isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0, "an int >= 0")

    def targets(self) -> tuple[DeclaredTarget, ...]:
        """The mean budget per request, where one is set."""
        return () if self.max_cost_usd is None else (DeclaredTarget("max_cost_usd", "cost_usd", float(self.max_cost_usd), 1.0),)

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> StageRoute:
        """Roll the router over the requests stage by stage; keep its final state and predicted means."""
        pi, engine = self._rollout(dataset, q_hat)
        self.state_, self.deployments_ = engine.state, engine.deployments
        self.n_fallback_, self.n_infeasible_ = engine.n_fallback, engine.n_infeasible
        v = engine.stream.weight / engine.stream.weight.sum()
        means = np.einsum("i,ik,ikm->m", v, pi, engine.stream.q)
        self.values_ = dict(zip(engine.stream.metrics, map(float, means), strict=True))
        self._cache = (dataset, q_hat, pi)
        return self

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        """π(a|x) of the mean-field rollout from ``start_``, shape (n, K), rows in dataset order."""
        if self._cache is not None and self._cache[0] is dataset and self._cache[1] is q_hat:
            return self._cache[2].copy()
        return self._rollout(dataset, q_hat)[0]

    def _rollout(self, dataset: RoutingContext, q_hat: FloatArray | None) -> tuple[FloatArray, _Engine]:
        engine = self._engine(dataset, q_hat, None)
        pi = np.zeros(engine.stream.eligible.shape)
        for _, rows in engine.windows():
            pi[rows] = engine.route(rows)
            engine.observe(rows, pi[rows], engine.r[rows], engine.c[rows])
        engine.state.last_traffic = engine.state.traffic - engine.stage_start_traffic  # the last stage is over
        return pi, engine

    @property
    def fallback_rule(self) -> str:
        return "every eligible arm, when none of the deployed arms serves the request"

    def online_learner(self, dataset: RoutingContext, q_hat: FloatArray | None = None, *,
               order: IntArray | None = None) -> StageRouteOnline:
        """A learner for `estimators.Replay`: its row t is dataset row ``order[t]`` (default: time order)."""
        return StageRouteOnline(self._engine(dataset, q_hat, order))

    def resumed(self) -> StageRoute:
        """A copy that starts from the state the fitted rollout ended in (to route later requests)."""
        if self.state_ is None:
            raise PolicyError(f"StageRoute '{self.name}' is not fitted: call fit(dataset, q_hat) or from_json first.")
        out = replace(self)
        out.start_, out._arms = self.state_.copy(), self._arms
        return out

    def to_json(self) -> str:
        """Settings, start and final state (per arm, by name) and predicted means."""
        def state(s: StageState | None) -> dict[str, object] | None:
            return None if s is None else s.to_dict(self._arms)

        data = {"kind": "stage_route", "format": 1, "settings": {k: getattr(self, k) for k in settings_of(type(self))},
                "arms": list(self._arms), "start": state(self.start_), "state": state(self.state_), "values": self.values_}
        return json.dumps(data, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> StageRoute:
        """A router from `to_json` text."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") != "stage_route" or data.get("format") != 1:
            raise PolicyError("Not a StageRoute router: expected JSON with kind 'stage_route' and format 1.")
        router = cls(**data["settings"])
        router._arms = tuple(data["arms"])
        router.start_ = None if data["start"] is None else StageState.from_dict(data["start"], router._arms)
        router.state_ = None if data["state"] is None else StageState.from_dict(data["state"], router._arms)
        router.values_ = data["values"]
        return router

    def _engine(self, dataset: RoutingContext, q_hat: FloatArray | None, order: IntArray | None) -> _Engine:
        stream = RequestStream.of(dataset, q_hat, f"StageRoute '{self.name}'", order)
        if self.start_ is not None and self._arms != tuple(dataset.arms):
            raise PolicyError(f"StageRoute '{self.name}': its state is for arms {list(self._arms)[:5]}..., "
                              "not this dataset's catalog.")
        self._arms = tuple(dataset.arms)
        scale = 1.0 if self.reward in _RATES else stream.typical(self.reward)
        start = self.start_.copy() if self.start_ is not None else StageState.fresh(
            len(self._arms), scale, stream.typical("cost_usd"), float(stream.weight.mean()))
        return _Engine(self, stream, start, np.asarray(dataset.arm_attributes["model"].to_list()))


_DAY_US = 86_400_000_000


class _Engine:
    """One run of the router over a request stream: stages, deployment, routing and learning."""

    def __init__(self, router: StageRoute, stream: RequestStream, state: StageState, arm_model: npt.NDArray[np.str_]) -> None:
        self.router, self.stream, self.state = router, stream, state
        _, group = np.unique(arm_model, return_inverse=True)
        self.groups = group[None, :] == np.arange(group.max() + 1)[:, None]  # (G, K)
        self.priority = np.random.default_rng(router.seed).permutation(len(arm_model))
        self.r, self.c = (np.where(stream.eligible, stream.metric(m), 0.0) for m in (router.reward, "cost_usd"))
        self.r_idx, self.c_idx = stream.metrics.index(router.reward), stream.metrics.index("cost_usd")
        self.w = stream.weight / state.weight_unit
        self.m = self.c.sum(axis=1) / stream.eligible.sum(axis=1)
        self.day0, self.stage_us = int(stream.ts_us.min()) // _DAY_US * _DAY_US, round(router.stage_hours * 3.6e9)
        offset = stream.ts_us - self.day0
        self.stage_of = offset // self.stage_us
        self.window_of = self.stage_of * (self.stage_us // 60_000_000 + 1) + (offset % self.stage_us) // round(
            router.refresh_minutes * 6e7)
        self.deployed = np.zeros(len(arm_model), dtype=bool)
        self.deployments: list[tuple[str, float, tuple[str, ...]]] = []
        self.n_fallback = self.n_infeasible = 0
        self.current: int | None = None
        self.stage_start_traffic = state.traffic

    def windows(self) -> list[tuple[int, IntArray]]:
        """(refresh window id, its dataset rows) in time order; windows nest in stages."""
        ids, inverse = np.unique(self.window_of, return_inverse=True)
        rows = np.argsort(inverse, kind="stable")
        return list(zip(ids.tolist(), np.split(rows, np.cumsum(np.bincount(inverse))[:-1]), strict=True))

    def target(self) -> float:
        """The stage's mean budget per request: max_cost_usd, less the debt over the last stage's traffic."""
        s, cap = self.state, self.router.max_cost_usd
        if cap is None:
            return math.inf
        debt = s.spend - cap * s.traffic
        if not self.router.pacing or debt <= 0:
            return cap
        return max(0.0, cap - debt / max(s.last_traffic, 1.0))

    def bounds(self, r: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray]:
        """UCB of the reward and LCB of the cost for predictions r, c (..., K)."""
        width = self.state.width(self.router.confidence, self.router.prior_weight)
        delta, rho = self.state.corrections(self.router.prior_weight)
        return r + delta + self.state.reward_scale * width, c * np.maximum(0.0, rho - width)

    def deploy(self, beta: float) -> npt.NDArray[np.bool_]:
        """Per model: the support of the LP on mean bounds, then the highest UCBs, up to max_deployed."""
        s = self.state
        seen = s.seen_w > 0
        c_mean = np.where(seen, s.seen_c / np.where(seen, s.seen_w, 1.0), 0.0)
        u, cost = self.bounds(np.where(seen, s.seen_r / np.where(seen, s.seen_w, 1.0), 0.0), c_mean)
        known = self.groups & seen
        level = (known * c_mean).sum(axis=1) / np.maximum(known.sum(axis=1), 1)
        budget = beta * level if math.isfinite(beta) else np.full(level.shape, np.inf)
        budget[~known.any(axis=1)] = np.inf
        g = self.groups.shape[0]
        x, _ = route_lp(np.broadcast_to(u, (g, u.size)), np.broadcast_to(cost, (g, u.size)), budget,
                        self.router.capacity, self.groups)
        deployed = np.zeros(u.size, dtype=bool)
        for k, members in enumerate(self.groups):
            arms = np.flatnonzero(members)
            share = np.where(x[k, arms] > 1e-12, x[k, arms], 0.0)
            best = arms[np.lexsort((self.priority[arms], cost[arms], -u[arms], -share))]
            deployed[best[: self.router.max_deployed]] = True
        return deployed

    def route(self, rows: IntArray) -> FloatArray:
        """Route one refresh window's rows (deploying first if a stage starts); bounds fixed within it.

        Each query's budget is β · m_t, m_t its mean q̂ cost over its eligible arms, β the target
        over the mean m of the requests served so far (of this window's, before any was served),
        so that the budgets average the target.
        """
        stage, s, w = int(self.stage_of[rows[0]]), self.state, self.w[rows]
        new_stage = stage != self.current
        if new_stage:
            if self.current is not None:
                s.last_traffic = s.traffic - self.stage_start_traffic
            self.current, self.stage_start_traffic = stage, s.traffic
        level = s.level / s.traffic if s.traffic > 0 else float(w @ self.m[rows] / w.sum())
        target = self.target()
        beta = target / level if level > 0 else math.inf
        if new_stage:
            self.deployed = self.deploy(beta)
            start = np.datetime64(self.day0 + stage * self.stage_us, "us").astype(str) + "Z"
            self.deployments.append((start, target, tuple(np.asarray(self.router._arms)[self.deployed].tolist())))
        eligible = self.stream.eligible[rows]
        avail = eligible & self.deployed
        fallback = ~avail.any(axis=1)
        avail[fallback] = eligible[fallback]
        u, cost = self.bounds(self.r[rows], self.c[rows])
        x, infeasible = route_lp(u, cost, beta * self.m[rows] if math.isfinite(beta) else math.inf,
                                 self.router.capacity, avail)
        self.n_fallback += int(fallback.sum())
        self.n_infeasible += int(infeasible.sum())
        return x

    def observe(self, rows: IntArray, x: FloatArray, r_seen: FloatArray, c_seen: FloatArray) -> None:
        """Feedback on served rows: x (m, K) the served mass, r_seen / c_seen (m, K) the outcomes seen there.

        The mean-field rollout passes x = π and q̂ as the outcomes; online, x is the served arm.
        """
        s, w = self.state, self.w[rows][:, None]
        wx, el = w * x, w * self.stream.eligible[rows]
        spent = (wx * c_seen).sum(axis=0)
        s.served += wx.sum(axis=0)
        s.residual += (wx * (r_seen - self.r[rows])).sum(axis=0)
        s.cost_seen += spent
        s.cost_pred += (wx * self.c[rows]).sum(axis=0)
        s.seen_w += el.sum(axis=0)
        s.seen_r += (el * self.r[rows]).sum(axis=0)
        s.seen_c += (el * self.c[rows]).sum(axis=0)
        s.spend += float(spent.sum())
        s.traffic += float(w.sum())
        s.level += float(w[:, 0] @ self.m[rows])


class StageRouteOnline:
    """StageRoute learning online from the rows Replay shows it (`estimators.replay.OnlinePolicy`).

    Rows must come in time order. A stage's rows are routed together when its first row arrives:
    the bounds are fixed within a stage, so this equals routing them one by one.
    """

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self._pi = np.zeros(engine.stream.eligible.shape)
        self._rows = dict(engine.windows())
        self._window: int | None = None

    @property
    def state(self) -> StageState:
        return self.engine.state

    def probabilities(self, t: int, eligible: npt.NDArray[np.bool_]) -> FloatArray:
        """π_t over the arms, shape (K,), from the current stage's deployment and bounds."""
        i = int(self.engine.stream.order[t])
        window = int(self.engine.window_of[i])
        if window != self._window:
            if self._window is not None and window < self._window:
                msg = f"StageRoute '{self.engine.router.name}': rows must come in time order (row {t} is earlier)."
                raise PolicyError(msg)
            self._window = window
            self._pi[self._rows[window]] = self.engine.route(self._rows[window])
        return self._pi[i]

    def update(self, t: int, arm: int, reward: FloatArray) -> None:
        """Learn from row t served by ``arm`` with outcomes ``reward`` (M,); q̂ stands in for a missing value."""
        e, i = self.engine, int(self.engine.stream.order[t])
        seen = np.atleast_1d(np.asarray(reward, dtype=np.float64))
        r, c = e.r[i : i + 1].copy(), e.c[i : i + 1].copy()
        r[0, arm] = seen[e.r_idx] if np.isfinite(seen[e.r_idx]) else r[0, arm]
        c[0, arm] = seen[e.c_idx] if np.isfinite(seen[e.c_idx]) else c[0, arm]
        e.observe(np.array([i]), (np.arange(r.shape[1]) == arm)[None, :].astype(np.float64), r, c)
