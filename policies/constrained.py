"""The cvxpy-constrained router: cheapest (or fastest) routing under satisfaction, SLA, budget and share targets.

`ConstrainedRouter.fit` solves, on the logged requests and their predicted outcomes q̂, the LP

    minimise    Σ_i v_i Σ_a x_ia · cost_ia            (or maximise Σ_i v_i Σ_a x_ia · tps_ia)
    subject to  Σ_a x_ia = 1,   x_ia ≥ ε / |E_i| on every eligible arm, x_ia = 0 elsewhere,
                Σ_i v_i Σ_a x_ia · sat_ia ≥ s_min,    Σ_i v_i Σ_a x_ia · sla_ia ≥ h_min,
                Σ_i v_i Σ_a x_ia · cost_ia ≤ budget,  Σ_i v_i Σ_{a of p} x_ia ≤ share_p,

with v the normalised sample weights and only the targets that are set. Variables exist only for
eligible pairs; rows are summed by one sparse matrix. What the router deploys is not x but the
`LagrangianRule` read off the LP's dual variables, which scores any new request on its own.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Literal

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from policies.base import FloatArray, PolicyError
from policies.lagrangian import LagrangianRule, fitted_tie_weights

if TYPE_CHECKING:
    from ope.dataset import BanditDataset

__all__ = ["ConstrainedRouter", "stratified_rows"]

IntArray = npt.NDArray[np.int64]
#: a target counts as missed by the deployable rule beyond this share of its scale
RULE_TOLERANCE = 1e-3
_SETTINGS = ("name", "objective", "min_satisfaction", "min_sla_hit", "max_cost_usd", "max_share", "exploration",
             "solver", "max_rows", "seed")


def stratified_rows(strata: npt.NDArray[np.generic], size: int, seed: int) -> tuple[IntArray, FloatArray]:
    """At most ≈ ``size`` row indices, proportionally per stratum (≥ 1 each), and each kept row's inflation."""
    n = strata.shape[0]
    if n <= size:
        return np.arange(n), np.ones(n)
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = np.maximum(1, counts * size // n)
    order = np.lexsort((np.random.default_rng(seed).random(n), inverse))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - (np.cumsum(counts) - counts)[inverse[order]]
    idx = np.flatnonzero(rank < quota[inverse])
    return idx, (counts / quota)[inverse[idx]]


@dataclass(frozen=True, slots=True)
class _Target:
    """One mean constraint: ``sense · value ≤ sense · target`` (sense −1 for a floor, +1 for a cap)."""

    key: str
    label: str
    target: float
    sense: float
    metric: str | None = None
    provider: str | None = None


@dataclass(slots=True)
class _RoutingLP:
    """The eligible pairs of the fitted requests, each pair's outcomes, and the LP built on them."""

    eligible: npt.NDArray[np.bool_]
    v: FloatArray
    exploration: float
    solver: str
    rows: IntArray = field(init=False)
    cols: IntArray = field(init=False)
    floor: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        self.rows, self.cols = np.nonzero(self.eligible)
        self.floor = self.exploration / self.eligible.sum(axis=1)[self.rows]

    def best_alone(self, g: FloatArray) -> float:
        """min Σ v x·g over the simplex with its floor, in closed form (pairs' g, ≤ orientation)."""
        dense = np.zeros(self.eligible.shape)
        dense[self.rows, self.cols] = g
        mean = dense.sum(axis=1) / self.eligible.sum(axis=1)
        best = np.where(self.eligible, dense, np.inf).min(axis=1)
        return float(self.v @ (self.exploration * mean + (1 - self.exploration) * best))

    def solve(self, objective: FloatArray, g: FloatArray, bound: FloatArray) -> tuple[str, FloatArray, FloatArray]:
        """Minimise Σ v x·objective s.t. Σ v x·g_c ≤ bound_c; status, free mass y = x − floor, duals."""
        n_pairs = self.rows.shape[0]
        wv = self.v[self.rows]
        y = cp.Variable(n_pairs, nonneg=True)
        row_sum = sp.csr_matrix((np.ones(n_pairs), (self.rows, np.arange(n_pairs))), shape=(self.eligible.shape[0], n_pairs))
        constraints = [row_sum @ y == 1.0 - self.exploration]
        if g.shape[0]:
            a = sp.csr_matrix(g * wv)
            constraints.append(a @ y <= bound - a @ self.floor)
        problem = cp.Problem(cp.Minimize((wv * objective) @ y), constraints)
        options = {"highs_options": {"solver": "ipm", "output_flag": False}} if self.solver == "HIGHS" else {}
        try:
            problem.solve(solver=self.solver, **options)
        except cp.error.SolverError as exc:
            msg = f"The {self.solver} solver failed on the routing LP ({exc}). Try solver='CLARABEL' or 'HIGHS'."
            raise PolicyError(msg) from exc
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return problem.status, np.empty(0), np.empty(0)
        if problem.status == cp.OPTIMAL_INACCURATE:
            warnings.warn(f"The {self.solver} solver stopped inaccurate on the routing LP.", RuntimeWarning, stacklevel=3)
        duals = np.atleast_1d(constraints[1].dual_value) if g.shape[0] else np.empty(0)
        return problem.status, np.maximum(y.value, 0.0), np.maximum(duals, 0.0)

    def dense(self, pairs: FloatArray) -> FloatArray:
        """Pair values as an (n, K) matrix, zero outside eligible."""
        out = np.zeros(self.eligible.shape)
        out[self.rows, self.cols] = pairs
        return out


@dataclass(kw_only=True)
class ConstrainedRouter:
    """Cost-minimising (or throughput-maximising) routing under mean targets, deployed as a Lagrangian rule.

    Targets left None are not imposed. ``max_share`` caps each named provider's share of requests;
    ``exploration`` ε puts at least ε/|E_i| on every eligible arm so the policy stays evaluable.
    Above ``max_rows`` requests the LP is solved on a sample stratified by model (``seed``).
    Learned: ``rule_`` (the deployable rule), ``multipliers_`` (shadow prices, objective units per
    unit of each target), ``lp_values_`` and ``fitted_values_`` (the LP's and the rule's means on
    the fitted requests), ``lp_probabilities_`` (the LP's x on those requests), ``fitted_rows_``.

    Notes
    -----
    The rule routes each request to its lowest score objective + Σ λ·g (see `policies.lagrangian`);
    on near-ties it splits as the LP did on average, so on the fitted requests it meets every target
    (checked after fitting: a miss beyond ``RULE_TOLERANCE`` of a target's scale warns).
    """

    name: str = "constrained"
    objective: Literal["cost", "throughput"] = "cost"
    min_satisfaction: float | None = None
    min_sla_hit: float | None = None
    max_cost_usd: float | None = None
    max_share: dict[str, float] | None = None
    exploration: float = 0.0
    solver: str = "CLARABEL"
    max_rows: int | None = 100_000
    seed: int = 0
    needs_q_hat: ClassVar[bool] = True
    rule_: LagrangianRule | None = field(default=None, init=False, repr=False)
    multipliers_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    lp_values_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    fitted_values_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    lp_probabilities_: FloatArray | None = field(default=None, init=False, repr=False)
    fitted_rows_: IntArray | None = field(default=None, init=False, repr=False)
    solve_seconds_: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                msg = f"The '{key}' parameter of ConstrainedRouter must be {expected}. Got {getattr(self, key)!r} instead."
                raise ValueError(msg)

        def number(x: object) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)

        check("objective", self.objective in ("cost", "throughput"), "'cost' or 'throughput'")
        for key in ("min_satisfaction", "min_sla_hit"):
            value = getattr(self, key)
            check(key, value is None or (number(value) and 0 <= value <= 1), "None or a float in [0, 1]")
        check("max_cost_usd", self.max_cost_usd is None or (number(self.max_cost_usd) and self.max_cost_usd >= 0),
              "None or a float >= 0")
        check("max_share", self.max_share is None or (isinstance(self.max_share, dict) and all(
            isinstance(k, str) and number(v) and 0 <= v <= 1 for k, v in self.max_share.items())),
            "None or a dict of provider -> share in [0, 1]")
        check("exploration", number(self.exploration) and 0 <= self.exploration < 1, "a float in [0, 1)")
        check("solver", self.solver in cp.installed_solvers(), f"an installed cvxpy solver {cp.installed_solvers()}")
        check("max_rows", self.max_rows is None or (isinstance(self.max_rows, int) and self.max_rows >= 1),
              "None or an int >= 1")
        check("seed", isinstance(self.seed, int) and self.seed >= 0, "an int >= 0")

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, dataset: BanditDataset, q_hat: FloatArray) -> ConstrainedRouter:
        """Solve the LP on the dataset's requests (or a stratified sample) and derive the rule."""
        q = self._checked_q_hat(dataset, q_hat)
        idx, inflate = stratified_rows(dataset.logs["model"].to_numpy(), self.max_rows or dataset.n, self.seed)
        q, weight = q[idx], dataset.sample_weight[idx] * inflate
        lp = _RoutingLP(dataset.eligible[idx], weight / weight.sum(), self.exploration, self.solver)
        metrics, providers = dataset.metrics, _providers(dataset)
        pair_q = q[lp.rows, lp.cols]
        scale = {m: _scale(lp, pair_q[:, j]) for j, m in enumerate(metrics)}
        targets = self._targets(set(providers))
        pair_provider = np.asarray(providers)[lp.cols]
        g = np.array([_pair_values(t, pair_q, metrics, pair_provider) for t in targets]).reshape(len(targets), lp.rows.shape[0])
        unit = np.array([_unit(t, scale) for t in targets])
        g_norm, bound = g * (np.array([t.sense for t in targets]) / unit)[:, None], np.array([t.sense * t.target for t in targets]) / unit
        obj_metric = "cost_usd" if self.objective == "cost" else "throughput_tps"
        obj_sign = 1.0 if self.objective == "cost" else -1.0
        objective = obj_sign * pair_q[:, metrics.index(obj_metric)] / scale[obj_metric]
        self._check_alone(lp, targets, g_norm, bound, unit)
        start = time.perf_counter()
        status, y, duals = lp.solve(objective, g_norm, bound)
        self.solve_seconds_ = time.perf_counter() - start
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise PolicyError(self._infeasible_message(lp, targets, g_norm, bound, unit))
        if not y.size:
            raise PolicyError(f"ConstrainedRouter '{self.name}': the {self.solver} solver ended with status '{status}'.")
        coef = {obj_metric: obj_sign / scale[obj_metric]}
        prices: dict[str, float] = {}
        for t, lam, u in zip(targets, duals, unit, strict=True):
            if t.metric is not None:
                coef[t.metric] = coef.get(t.metric, 0.0) + lam * t.sense / u
            else:
                prices[t.provider] = lam * t.sense / u  # type: ignore[index]
        self.multipliers_ = {t.key: float(lam * scale[obj_metric] / u) for t, lam, u in zip(targets, duals, unit, strict=True)}
        rule = LagrangianRule(coef=coef, provider_price=prices, exploration=self.exploration)
        x = lp.dense(lp.floor + y)
        share = lp.dense(y / (1.0 - self.exploration))
        tied = rule.tied(rule.scores(q, metrics=metrics, providers=providers), lp.eligible)
        self.rule_ = replace(rule, tie_weight=fitted_tie_weights(tied, share, lp.v, dataset.arms))
        pi = self.rule_.probabilities(q, lp.eligible, metrics=metrics, arms=dataset.arms, providers=providers)
        self.lp_probabilities_, self.fitted_rows_ = x, idx
        self.lp_values_ = _values(x, q, lp.v, metrics, providers, targets)
        self.fitted_values_ = _values(pi, q, lp.v, metrics, providers, targets)
        self._warn_if_missed(targets, unit)
        return self

    def action_probabilities(self, dataset: BanditDataset, q_hat: FloatArray) -> FloatArray:
        """π(a|x) of the deployable rule on any requests, shape (n, K); q_hat (n, K, M) their q̂."""
        if self.rule_ is None:
            msg = f"ConstrainedRouter '{self.name}' is not fitted: call fit(dataset, q_hat) or from_json first."
            raise PolicyError(msg)
        q = self._checked_q_hat(dataset, q_hat)
        return self.rule_.probabilities(q, dataset.eligible, metrics=dataset.metrics, arms=dataset.arms,
                                        providers=_providers(dataset))

    # -- the deployable rule as text ----------------------------------------------------------

    def to_json(self) -> str:
        """Settings, the rule and its shadow prices as JSON; `from_json` restores a router that routes identically."""
        if self.rule_ is None:
            raise PolicyError(f"ConstrainedRouter '{self.name}' is not fitted: there is no rule to write.")
        data = {"kind": "constrained", "format": 1, "settings": {k: getattr(self, k) for k in _SETTINGS},
                "rule": self.rule_.to_dict(), "multipliers": self.multipliers_, "fitted_values": self.fitted_values_}
        return json.dumps(data, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ConstrainedRouter:
        """A fitted router from `to_json` text."""
        data = json.loads(text)
        if data.get("kind") != "constrained" or data.get("format") != 1:
            raise PolicyError("Not a constrained-router rule (expected kind 'constrained', format 1).")
        router = cls(**data["settings"])
        router.rule_ = LagrangianRule.from_dict(data["rule"])
        router.multipliers_, router.fitted_values_ = data["multipliers"], data["fitted_values"]
        return router

    # -- helpers ------------------------------------------------------------------------------

    def _checked_q_hat(self, dataset: BanditDataset, q_hat: FloatArray) -> FloatArray:
        q = np.asarray(q_hat, dtype=np.float64)
        expected = (dataset.n, dataset.catalog.n_arms, len(dataset.metrics))
        if q.shape != expected:
            raise PolicyError(f"ConstrainedRouter '{self.name}': q_hat must have shape {expected} (n, K, M). Got {q.shape}.")
        bad = ~np.isfinite(q).all(axis=2) & dataset.eligible
        if bad.any():
            raise PolicyError(f"ConstrainedRouter '{self.name}': q_hat is not finite on {int(bad.sum())} eligible pairs.")
        return q

    def _targets(self, known: set[str]) -> list[_Target]:
        out = [_Target(k, label, getattr(self, k), sense, metric) for k, label, sense, metric in (
            ("min_satisfaction", "mean satisfaction", -1.0, "satisfaction"),
            ("min_sla_hit", "mean SLA hit rate", -1.0, "sla_hit"),
            ("max_cost_usd", "mean cost per request (USD)", 1.0, "cost_usd")) if getattr(self, k) is not None]
        unknown = sorted(set(self.max_share or {}) - known)
        if unknown:
            raise PolicyError(f"ConstrainedRouter '{self.name}': max_share names unknown providers {unknown}; the catalog has {sorted(known)}.")
        out += [_Target(f"max_share[{p!r}]", f"share of requests on {p}", cap, 1.0, provider=p)
                for p, cap in sorted((self.max_share or {}).items())]
        return out

    def _check_alone(self, lp: _RoutingLP, targets: list[_Target], g: FloatArray, bound: FloatArray,
                     unit: FloatArray) -> None:
        lines = [f"{_name(t)} is infeasible: the best reachable {t.label} is {t.sense * best * u:.4g} even with no other target."
                 for t, gc, b, u in zip(targets, g, bound, unit, strict=True) if (best := lp.best_alone(gc)) > b + 1e-9]
        if lines:
            raise PolicyError(self._header(lp) + "\n".join(lines))

    def _infeasible_message(self, lp: _RoutingLP, targets: list[_Target], g: FloatArray, bound: FloatArray,
                            unit: FloatArray) -> str:
        lines = []
        for c, t in enumerate(targets):
            others = np.arange(len(targets)) != c
            _, y, _ = lp.solve(g[c], g[others], bound[others])
            if y.size:
                best = float(lp.v[lp.rows] @ (g[c] * (lp.floor + y)))
                if best > bound[c] + 1e-7:
                    lines.append(f"{_name(t)} is infeasible: the best reachable {t.label} is "
                                 f"{t.sense * best * unit[c]:.4g} under the other constraints.")
        if not lines:
            lines.append(f"the targets {[_name(t) for t in targets]} cannot all hold together.")
        return self._header(lp) + "\n".join(lines)

    def _header(self, lp: _RoutingLP) -> str:
        return (f"ConstrainedRouter '{self.name}': the targets cannot all be met on the {lp.eligible.shape[0]} fitted "
                f"requests (exploration {self.exploration:g}).\n")

    def _warn_if_missed(self, targets: list[_Target], unit: FloatArray) -> None:
        for t, u in zip(targets, unit, strict=True):
            gap = t.sense * (self.fitted_values_[t.key] - t.target) / u
            if gap > RULE_TOLERANCE:
                msg = (f"ConstrainedRouter '{self.name}': on the fitted requests the deployable rule gives {t.label} "
                       f"{self.fitted_values_[t.key]:.4g} against the target {_name(t)} (LP {self.lp_values_[t.key]:.4g}).")
                warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _name(t: _Target) -> str:
    return f"{t.key} = {t.target:g}"


def _providers(dataset: BanditDataset) -> list[str]:
    return dataset.catalog.arms_frame["provider"].to_list()


def _scale(lp: _RoutingLP, pairs: FloatArray) -> float:
    """Typical magnitude of a metric: weighted mean over requests of its mean |value| over eligible arms."""
    value = float(lp.v @ (lp.dense(np.abs(pairs)).sum(axis=1) / lp.eligible.sum(axis=1)))
    return value if value > 0 else 1.0


def _unit(t: _Target, scale: dict[str, float]) -> float:
    return scale[t.metric] if t.metric in ("cost_usd", "throughput_tps") else 1.0


def _pair_values(t: _Target, pair_q: FloatArray, metrics: tuple[str, ...], pair_provider: npt.NDArray[np.str_]) -> FloatArray:
    if t.metric is not None:
        return pair_q[:, metrics.index(t.metric)]
    return (pair_provider == t.provider).astype(np.float64)


def _values(pi: FloatArray, q: FloatArray, v: FloatArray, metrics: tuple[str, ...], providers: list[str],
            targets: list[_Target]) -> dict[str, float]:
    """Weighted means of every metric under pi, and of every target (provider shares included)."""
    means = np.einsum("i,ik,ikm->m", v, pi, q)
    out = {m: float(x) for m, x in zip(metrics, means, strict=True)}
    arm_share = v @ pi
    for t in targets:
        out[t.key] = out[t.metric] if t.metric else float(arm_share[np.asarray(providers) == t.provider].sum())
    return out
