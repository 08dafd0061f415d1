"""The cvxpy-constrained router: cheapest (or fastest) routing under satisfaction, SLA, budget and share targets.

`ConstrainedRouter.fit` solves, on the logged requests and their predicted outcomes q̂, the LP

    minimise    Σ_i v_i Σ_a x_ia · cost_ia            (or maximise Σ_i v_i Σ_a x_ia · tps_ia)
    subject to  Σ_a x_ia = 1,   x_ia ≥ ε / |E_i| on every eligible arm, x_ia = 0 elsewhere,
                Σ_i v_i Σ_a x_ia · sat_ia ≥ s_min,    Σ_i v_i Σ_a x_ia · sla_ia ≥ h_min,
                Σ_i v_i Σ_a x_ia · cost_ia ≤ budget,  Σ_i v_i Σ_{a of p} x_ia ≤ share_p,
                Σ_i v_i Σ_a x_ia · P(latency_ia ≤ T) ≥ 0.95   (max_p95_latency_ms = T; likewise TTFT),

with v the normalised sample weights and only the targets that are set (`policies.routing_lp`).
What it deploys is not x but the `LagrangianRule` read off the LP's duals, which scores any new
request on its own (`policies.lagrangian`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Literal

import cvxpy as cp
import numpy as np

from policies.base import BasePolicy, DeclaredTarget, FloatArray, PolicyError, checked_q_hat, settings_of, uniform_over
from policies.lagrangian import LagrangianRule, lp_tie_split, tie_key, tie_sets
from policies.routing_lp import IntArray, RoutingLP, stratified_rows
from policies.tails import TAIL_LEVEL, TAIL_TARGETS, TailModel, tail_column

if TYPE_CHECKING:
    from policies.context import RoutingContext

__all__ = ["ConstrainedRouter"]

#: the rule may miss a target on the fitted requests by this share of the target's scale before it warns
RULE_TOLERANCE = 1e-3
#: setting → (label, sense, metric); sense −1 is a floor (value ≥ target), +1 a cap (value ≤ target)
_MEAN_TARGETS = {
    "min_satisfaction": ("mean satisfaction", -1.0, "satisfaction"),
    "min_sla_hit": ("mean SLA hit rate", -1.0, "sla_hit"),
    "max_cost_usd": ("mean cost per request (USD)", 1.0, "cost_usd"),
}
_SCALED = ("cost_usd", "throughput_tps")  # normalised by their typical magnitude inside the LP


@dataclass(frozen=True, slots=True)
class _Target:
    """One target: ``sense · mean ≤ sense · target`` of a metric or of a provider's share of requests."""

    key: str
    label: str
    target: float
    sense: float
    metric: str | None = None
    provider: str | None = None

    def __str__(self) -> str:
        return f"{self.key} = {self.target:g}"


@dataclass(kw_only=True)
class ConstrainedRouter(BasePolicy):
    """Cost-minimising (or throughput-maximising) routing under mean targets, deployed as a Lagrangian rule.

    Targets left None are not imposed. ``max_share`` caps each named provider's share of requests;
    ``exploration`` ε puts at least ε/|E_i| on every eligible arm so the policy stays evaluable.
    Above ``max_rows`` requests the LP is solved on a sample stratified by model (``seed``).
    ``certify`` (with ``certify_alpha``, ``certify_rounds``) asks a run to certify the mean targets on
    rows the fit did not use (`ope.evaluation.certify`); the router itself only solves, at its targets
    tightened by ``tightening_`` (target key → amount, in the target's units, set by `tighten`).
    Learned: ``rule_`` (the deployable rule), ``multipliers_`` (shadow prices, objective units per
    unit of each target), ``lp_values_`` and ``fitted_values_`` (the LP's and the rule's means on
    the fitted requests), ``lp_probabilities_`` (the LP's x there), ``fitted_rows_``, ``solve_stats_``.

    Notes
    -----
    The rule gives each request's free mass to its lowest score objective + Σ λ·g and splits
    near-ties as the LP did, so on the fitted requests it reproduces the LP's means; after fitting,
    a miss beyond ``RULE_TOLERANCE`` of a target's scale warns. Targets are checked for
    reachability first; infeasible ones raise `PolicyError` with the best value reachable.
    """

    name: str = "constrained"
    objective: Literal["cost", "throughput"] = "cost"
    min_satisfaction: float | None = None
    min_sla_hit: float | None = None
    max_cost_usd: float | None = None
    max_share: dict[str, float] | None = None
    max_p95_latency_ms: float | None = None
    max_p95_ttft_ms: float | None = None
    exploration: float = 0.0
    solver: str = "CLARABEL"
    max_rows: int | None = 100_000
    seed: int = 0
    certify: bool = True
    certify_alpha: float = 0.025
    certify_rounds: int = 5
    needs_q_hat: ClassVar[bool] = True
    learns: ClassVar[bool] = True
    cross_fit: ClassVar[bool] = True
    tightening_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    certificate_: dict[str, object] | None = field(default=None, init=False, repr=False)
    rule_: LagrangianRule | None = field(default=None, init=False, repr=False)
    multipliers_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    lp_values_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    fitted_values_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    lp_probabilities_: FloatArray | None = field(default=None, init=False, repr=False)
    fitted_rows_: IntArray | None = field(default=None, init=False, repr=False)
    solve_stats_: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    tail_model_: TailModel | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                msg = f"The '{key}' parameter of ConstrainedRouter must be {expected}. Got {getattr(self, key)!r} instead."
                raise ValueError(msg)

        def number(x: object, low: float, high: float) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and low <= x <= high

        check("objective", self.objective in ("cost", "throughput"), "'cost' or 'throughput'")
        check("min_satisfaction", self.min_satisfaction is None or number(self.min_satisfaction, 0, 1), "None or a float in [0, 1]")
        check("min_sla_hit", self.min_sla_hit is None or number(self.min_sla_hit, 0, 1), "None or a float in [0, 1]")
        check("max_cost_usd", self.max_cost_usd is None or number(self.max_cost_usd, 0, np.inf) and self.max_cost_usd < np.inf,
              "None or a finite float >= 0")
        check("max_share", self.max_share is None or isinstance(self.max_share, dict) and all(
            isinstance(k, str) and number(v, 0, 1) for k, v in self.max_share.items()), "None or a dict of provider -> share in [0, 1]")
        for key in TAIL_TARGETS:
            value = getattr(self, key)
            check(key, value is None or number(value, 0, np.inf) and 0 < value < np.inf, "None or a finite float > 0 (ms)")
        check("exploration", number(self.exploration, 0, 1) and self.exploration < 1, "a float in [0, 1)")
        check("solver", self.solver in cp.installed_solvers(), f"one of the installed cvxpy solvers {cp.installed_solvers()}")
        check("max_rows", self.max_rows is None or number(self.max_rows, 1, np.inf) and isinstance(self.max_rows, int),
              "None or an int >= 1")
        check("seed", isinstance(self.seed, int) and number(self.seed, 0, np.inf), "an int >= 0")
        check("certify", isinstance(self.certify, bool), "a bool")
        check("certify_alpha", number(self.certify_alpha, 0, 0.5) and 0 < self.certify_alpha, "a float in (0, 0.5]")
        check("certify_rounds", isinstance(self.certify_rounds, int) and number(self.certify_rounds, 0, 20), "an int in [0, 20]")

    def targets(self) -> tuple[DeclaredTarget, ...]:
        """The mean targets as declared (provider shares are not estimated outcomes, so they are not among them)."""
        means = tuple(DeclaredTarget(key, metric, float(getattr(self, key)), sense)
                      for key, (_, sense, metric) in _MEAN_TARGETS.items() if getattr(self, key) is not None)
        return means + tuple(DeclaredTarget(key, metric, float(getattr(self, key)), 1.0, quantile=TAIL_LEVEL)
                             for key, metric in TAIL_TARGETS.items() if getattr(self, key) is not None)

    def use_tail_model(self, model: TailModel) -> ConstrainedRouter:
        """The distributional model the p95 targets need (a run hands it over from its outcome models); self."""
        self.tail_model_ = model
        return self

    def _tails(self) -> list[tuple[str, float]]:
        """(metric, T) of every p95 target set."""
        return [(metric, float(getattr(self, key))) for key, metric in TAIL_TARGETS.items() if getattr(self, key) is not None]

    def with_tails(self, q: FloatArray, metrics: tuple[str, ...]) -> tuple[FloatArray, tuple[str, ...]]:
        """q̂ with a column P(metric ≤ T) per p95 target, and the metric names (unchanged without p95 targets)."""
        tails = self._tails()
        if tails and self.tail_model_ is None:
            raise PolicyError(f"ConstrainedRouter '{self.name}': max_p95_* targets need a distributional outcome model "
                              "(use_tail_model; a run gives it the residual spread of its TTFT and latency models).")
        return (q, metrics) if not tails or self.tail_model_ is None else self.tail_model_.columns(q, metrics, tails)

    def certify_settings(self) -> tuple[float, int] | None:
        return (float(self.certify_alpha), int(self.certify_rounds)) if self.certify else None

    def predicted_values(self) -> dict[str, float]:
        return self.fitted_values_

    def tighten(self, shifts: dict[str, float]) -> ConstrainedRouter:
        """From the next ``fit`` on, solve with each mean target stricter by ``shifts[key]`` (≥ 0, in its units); self."""
        self.tightening_ = {k: float(v) for k, v in shifts.items() if v}
        return self

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> ConstrainedRouter:
        """Solve the LP on the dataset's requests (or a stratified sample of them) and derive the rule.

        ``q_hat`` (n, K, M) predicted expected outcomes of every request and arm, M in
        ``dataset.metrics`` order (e.g. ``fit_outcome_models(dataset).q_hat``); it is required (the
        default None only keeps the `Policy` signature and raises).
        """
        q, metrics = self.with_tails(self._checked_q_hat(dataset, q_hat), tuple(dataset.metrics))
        idx, inflate = stratified_rows(dataset.requests["model"].to_numpy(), self.max_rows or dataset.n, self.seed)
        q, weight = q[idx], dataset.sample_weight[idx] * inflate
        lp = RoutingLP(dataset.eligible[idx], weight / weight.sum(), self.exploration, self.solver)
        providers = _providers(dataset)
        pair_q = q[lp.rows, lp.cols]
        scale = {m: _scale(lp, pair_q[:, j]) if m in _SCALED else 1.0 for j, m in enumerate(metrics)}
        targets = self._targets(set(providers))
        unit = np.array([scale[t.metric] if t.metric else 1.0 for t in targets])
        g = np.array([pair_q[:, metrics.index(t.metric)] if t.metric else (np.asarray(providers)[lp.cols] == t.provider)
                      for t in targets], dtype=np.float64).reshape(len(targets), lp.rows.shape[0])
        sense = np.array([t.sense for t in targets])
        g, bound = g * (sense / unit)[:, None], sense * np.array([t.target for t in targets]) / unit
        self._raise_if_unreachable(lp, targets, g, bound, unit)
        obj_metric, obj_sign = ("cost_usd", 1.0) if self.objective == "cost" else ("throughput_tps", -1.0)
        objective = obj_sign * pair_q[:, metrics.index(obj_metric)] / scale[obj_metric]
        solution = lp.solve(objective, g, bound)
        self.solve_stats_ = solution.stats
        if solution.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise PolicyError(self._infeasible_message(lp, targets, g, bound, unit))
        if not solution.solved:
            raise PolicyError(f"ConstrainedRouter '{self.name}': the {self.solver} solver ended with status '{solution.status}'.")
        rule = self._rule(targets, solution.duals, unit, obj_metric, obj_sign, scale[obj_metric])
        share = lp.dense(solution.y / (1.0 - self.exploration))
        self.rule_ = self._calibrated(rule, rule.scores(q, metrics=metrics, providers=providers), lp, share, objective, g,
                                      bound, dataset.arms)
        pi = self.rule_.probabilities(q, lp.eligible, metrics=metrics, arms=dataset.arms, providers=providers)
        self.lp_probabilities_, self.fitted_rows_ = lp.dense(lp.floor + solution.y), idx
        self.lp_values_ = _values(self.lp_probabilities_, q, lp.v, metrics, providers, targets)
        self.fitted_values_ = _values(pi, q, lp.v, metrics, providers, targets)
        self._warn_if_missed(targets, unit)
        return self

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        """π(a|x) of the deployable rule on any requests, shape (n, K); ``q_hat`` (n, K, M) is their q̂."""
        if self.rule_ is None:
            msg = f"ConstrainedRouter '{self.name}' is not fitted: call fit(dataset, q_hat) or from_json first."
            raise PolicyError(msg)
        q, metrics = self.with_tails(self._checked_q_hat(dataset, q_hat), tuple(dataset.metrics))
        return self.rule_.probabilities(q, dataset.eligible, metrics=metrics, arms=dataset.arms, providers=_providers(dataset))

    def to_json(self) -> str:
        """Settings, rule and shadow prices as JSON; `from_json` gives a router that routes identically."""
        if self.rule_ is None:
            raise PolicyError(f"ConstrainedRouter '{self.name}' is not fitted: there is no rule to write.")
        data = {"kind": "constrained", "format": 1, "settings": {k: getattr(self, k) for k in settings_of(type(self))},
                "rule": self.rule_.to_dict(), "multipliers": self.multipliers_, "fitted_values": self.fitted_values_,
                "tightening": self.tightening_, "certificate": self.certificate_,
                "tail_model": None if self.tail_model_ is None else self.tail_model_.to_dict()}
        return json.dumps(data, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ConstrainedRouter:
        """A fitted router from `to_json` text."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") != "constrained" or data.get("format") != 1:
            raise PolicyError("Not a constrained-router rule: expected JSON with kind 'constrained' and format 1.")
        router = cls(**data["settings"])
        router.rule_ = LagrangianRule.from_dict(data["rule"])
        router.multipliers_, router.fitted_values_ = data["multipliers"], data["fitted_values"]
        router.tightening_, router.certificate_ = data.get("tightening", {}), data.get("certificate")
        router.tail_model_ = None if data.get("tail_model") is None else TailModel.from_dict(data["tail_model"])
        return router

    def _checked_q_hat(self, dataset: RoutingContext, q_hat: FloatArray | None) -> FloatArray:
        return checked_q_hat(dataset, q_hat, f"ConstrainedRouter '{self.name}'")

    def _targets(self, known: set[str]) -> list[_Target]:
        out = [_Target(key, label, getattr(self, key) - sense * self.tightening_.get(key, 0.0), sense, metric)
               for key, (label, sense, metric) in _MEAN_TARGETS.items() if getattr(self, key) is not None]
        out += [_Target(key, f"share of requests with {metric} <= {getattr(self, key):g}", TAIL_LEVEL + self.tightening_.get(key, 0.0),
                        -1.0, tail_column(metric, float(getattr(self, key)))) for key, metric in TAIL_TARGETS.items()
                if getattr(self, key) is not None]
        unknown = sorted(set(self.max_share or {}) - known)
        if unknown:
            msg = f"ConstrainedRouter '{self.name}': max_share names unknown providers {unknown}; the catalog has {sorted(known)}."
            raise PolicyError(msg)
        return out + [_Target(f"max_share[{p!r}]", f"share of requests on {p}", cap, 1.0, provider=p)
                      for p, cap in sorted((self.max_share or {}).items())]

    def _rule(self, targets: list[_Target], duals: FloatArray, unit: FloatArray, obj_metric: str, obj_sign: float,
              obj_scale: float) -> LagrangianRule:
        """Score weights from the multipliers; also keeps them in objective units as ``multipliers_``."""
        coef, prices = {obj_metric: obj_sign / obj_scale}, {}
        for t, lam, u in zip(targets, duals, unit, strict=True):
            if t.metric is not None:
                coef[t.metric] = coef.get(t.metric, 0.0) + float(lam * t.sense / u)
            else:
                prices[t.provider] = float(lam / u)
        self.multipliers_ = {t.key: float(lam * obj_scale / u) for t, lam, u in zip(targets, duals, unit, strict=True)}
        return LagrangianRule(coef=coef, provider_price=prices, exploration=self.exploration)

    def _calibrated(self, rule: LagrangianRule, scores: FloatArray, lp: RoutingLP, share: FloatArray, objective: FloatArray,
                    g: FloatArray, bound: FloatArray, arms: tuple[str, ...]) -> LagrangianRule:
        """The rule with its tie tolerance and tie splits, calibrated so the targets hold on the fitted rows.

        A wider tolerance (up to 1e-3) makes more near-ties, i.e. more freedom for the calibration:
        of the tolerances tried, the feasible calibration with the best objective wins. If none is
        feasible, each tie set keeps the LP's aggregate split at the base tolerance.
        """
        base = _tie_tolerance(scores, lp.eligible, share)
        best: tuple[float, LagrangianRule] | None = None
        for tol in sorted({min(base * f, 1e-3) for f in (1, 10, 100)}):
            candidate = replace(rule, tie_tol=tol)
            tied = candidate.tied(scores, lp.eligible)
            sets = tie_sets(tied)
            fixed = self.exploration * uniform_over(lp.eligible) + (1 - self.exploration) * (tied & (tied.sum(1, keepdims=True) == 1))
            calibrated = lp.calibrate(sets, fixed, objective, g, bound)
            if calibrated is not None and (best is None or calibrated[1] < best[0] - 1e-9 * abs(best[0])):
                best = (calibrated[1], replace(candidate, tie_split=_split_dict(sets, calibrated[0], arms)))
        if best is not None:
            return best[1]
        candidate = replace(rule, tie_tol=base)
        sets = tie_sets(candidate.tied(scores, lp.eligible))
        return replace(candidate, tie_split=_split_dict(sets, lp_tie_split(sets, share, lp.v), arms))

    def _raise_if_unreachable(self, lp: RoutingLP, targets: list[_Target], g: FloatArray, bound: FloatArray,
                              unit: FloatArray) -> None:
        """Targets no policy meets even alone (closed form, before any solve)."""
        lines = [f"{t} is infeasible: the best reachable {t.label} is {t.sense * best * u:.4g} even with no other target."
                 for t, gc, b, u in zip(targets, g, bound, unit, strict=True) if (best := lp.best_alone(gc)) > b + 1e-9]
        if lines:
            raise PolicyError(self._header(lp) + "\n".join(lines))

    def _infeasible_message(self, lp: RoutingLP, targets: list[_Target], g: FloatArray, bound: FloatArray,
                            unit: FloatArray) -> str:
        """Name each target whose best value under all the others misses it (one auxiliary LP per target)."""
        lines = []
        for c, t in enumerate(targets):
            others = np.arange(len(targets)) != c
            aux = lp.solve(g[c], g[others], bound[others])
            if aux.solved and (best := lp.mean(g[c], aux.y)) > bound[c] + 1e-7:
                lines.append(f"{t} is infeasible: the best reachable {t.label} is {t.sense * best * unit[c]:.4g} "
                             "under the other constraints.")
        return self._header(lp) + "\n".join(lines or [f"the targets {[str(t) for t in targets]} cannot all hold together."])

    def _header(self, lp: RoutingLP) -> str:
        return (f"ConstrainedRouter '{self.name}': the targets cannot all be met on the {lp.eligible.shape[0]} fitted "
                f"requests (exploration {self.exploration:g}).\n")

    def _warn_if_missed(self, targets: list[_Target], unit: FloatArray) -> None:
        for t, u in zip(targets, unit, strict=True):
            if t.sense * (self.fitted_values_[t.key] - t.target) / u > RULE_TOLERANCE:
                msg = (f"ConstrainedRouter '{self.name}': on the fitted requests the deployable rule gives {t.label} "
                       f"{self.fitted_values_[t.key]:.4g} against {t} (the LP: {self.lp_values_[t.key]:.4g}).")
                warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _providers(dataset: RoutingContext) -> list[str]:
    return dataset.arm_attributes["provider"].to_list()


def _split_dict(sets: list[tuple[IntArray, IntArray]], splits: list[FloatArray], arms: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {tie_key(arms, cols): {arms[c]: float(w) for c, w in zip(cols, split, strict=True)}
            for (_, cols), split in zip(sets, splits, strict=True)}


def _tie_tolerance(scores: FloatArray, eligible: np.ndarray, lp_share: FloatArray) -> float:
    """Twice the largest score gap on which the LP still put ≥ 5 % of a request's free mass, in [1e-5, 1e-3].

    Rows the LP splits tie in exact arithmetic; numerically their gap is the duals' error, which
    this keeps inside the tolerance so that those rows become tie sets the calibration can split.
    """
    gap = scores - np.where(eligible, scores, np.inf).min(axis=1, keepdims=True)
    used = eligible & (lp_share >= 0.05)
    return float(np.clip(2 * gap[used].max(initial=0.0), 1e-5, 1e-3))


def _scale(lp: RoutingLP, pairs: FloatArray) -> float:
    """Typical magnitude of a metric: weighted mean over requests of its mean |value| over eligible arms."""
    value = float(lp.v @ (lp.dense(np.abs(pairs)).sum(axis=1) / lp.eligible.sum(axis=1)))
    return value if value > 0 else 1.0


def _values(pi: FloatArray, q: FloatArray, v: FloatArray, metrics: tuple[str, ...], providers: list[str],
            targets: list[_Target]) -> dict[str, float]:
    """Weighted means of every metric under pi, and of every target (provider shares included)."""
    out = {m: float(x) for m, x in zip(metrics, np.einsum("i,ik,ikm->m", v, pi, q), strict=True)}
    arm_share = v @ pi
    for t in targets:
        out[t.key] = out[t.metric] if t.metric else float(arm_share[np.asarray(providers) == t.provider].sum())
    return out
