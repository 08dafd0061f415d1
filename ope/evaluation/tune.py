"""`ope tune`: sweep a constrained router's budget and SLA settings and recommend one that is safe to roll out.

Models and routers learn from a training window (the first part of the log's time span) and each
setting is judged on the held-out window that follows, as a rollout would meet it: with the
config's headline estimator, paired against the baseline, and with intervals that are
Bonferroni-adjusted over every setting and target (``simultaneous``) because the recommendation is
chosen from many settings. A setting is *safe* when every rollout target holds at its conservative bound
(lower bound for SLA hit and satisfaction, upper bound for cost); the recommendation is the safe
setting with the lowest estimated cost, or none, said plainly.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import SupportWarning
from ope.config import ExperimentConfig, PolicyConfig, TuneConfig
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError
from ope.evaluation.batch import BatchContext, BatchRows, evaluate_batch, policy_target
from ope.evaluation.certify import fit_cross_fitted
from ope.evaluation.engines.memory import MemoryEngine
from ope.evaluation.fit import fit_run
from ope.evaluation.plan import Plan
from ope.evaluation.ranges import OutOfRange, out_of_range
from ope.evaluation.registry import build_policies, build_policy
from ope.evaluation.tables import ESTIMATE_COLUMNS, blank_metric, estimate_table
from ope.models.predictors import OutcomeModels
from ope.models.spread import ResidualSpread
from ope.progress import progress
from policies import Pairs, Policy, PolicyError
from policies.base import declared_targets
from policies.tails import TailModel

__all__ = ["TARGETS", "TunePoint", "TuneResult", "run_tune", "split_by_time"]

#: rollout target → (metric, bound checked, sense): a floor needs ci_low ≥ target, a cap ci_high ≤ target
TARGETS = {"min_sla_hit": ("sla_hit", "ci_low", 1.0), "min_satisfaction": ("satisfaction", "ci_low", 1.0),
           "max_cost_usd": ("cost_usd", "ci_high", -1.0)}


@dataclass(frozen=True, slots=True)
class TunePoint:
    """One setting of the grid: what was tried, what happened, and its hold-out estimates.

    ``status`` is "safe", "unsafe" (fitted, but a target fails at its bound) or "infeasible" (the
    router could not meet its own settings on the training window). ``estimates`` has the long
    form of `ESTIMATE_COLUMNS` (kinds value, difference, relative) for fitted points.
    """

    label: str
    settings: dict[str, float]
    status: str
    reasons: tuple[str, ...]
    estimates: pl.DataFrame | None = None
    policy: Policy | None = None

    def value(self, metric: str, column: str = "value", kind: str = "value") -> float:
        """One number of the hold-out estimates (NaN for an infeasible point)."""
        if self.estimates is None:
            return float("nan")
        row = self.estimates.filter((pl.col("metric") == metric) & (pl.col("kind") == kind))
        return float(row[column][0])


@dataclass(frozen=True, slots=True)
class TuneResult:
    """The sweep: every point, the baseline on the hold-out window, and the recommendation."""

    config: ExperimentConfig
    tune: TuneConfig
    dataset: BanditDataset
    train: npt.NDArray[np.bool_]
    split_at: Any
    estimator: str
    alpha: float
    points: list[TunePoint]
    baseline: pl.DataFrame
    recommended: int | None
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    outcome_models: OutcomeModels | None = None

    @property
    def pareto(self) -> list[int]:
        """Indices of fitted points no other fitted point beats on cost, SLA hit and satisfaction at once."""
        fitted = [i for i, p in enumerate(self.points) if p.estimates is not None]
        keys = {i: np.nan_to_num(np.array([-self.points[i].value("cost_usd"), self.points[i].value("sla_hit"),
                                           self.points[i].value("satisfaction")])) for i in fitted}  # NaN: a metric the log lacks
        return [i for i in fitted if not any((keys[j] >= keys[i]).all() and (keys[j] > keys[i]).any() for j in fitted)]

    @property
    def level(self) -> str:
        """The confidence level of each setting's intervals, as the verdict and the report both write it (``99.58 %``)."""
        return f"{100 * (1 - self.alpha):.4g} %"

    @property
    def verdict(self) -> str:
        """One plain sentence: the recommended setting, or why there is none."""
        targets = ", ".join(f"{k} = {v:g}" for k, v in _targets(self.tune).items())
        level = self.level
        if self.recommended is not None:
            p = self.points[self.recommended]
            return (f"Safe to roll out: {p.label} — the cheapest setting whose {level} confidence bounds meet {targets} on "
                    f"the hold-out window (estimated cost {p.value('cost_usd'):.4g} USD per request, "
                    f"{p.value('cost_usd', kind='relative'):+.1f} % against {self.config.evaluation.baseline}).")
        fitted = [p for p in self.points if p.estimates is not None]
        if not fitted:
            return f"No setting is safe to roll out: the router could not be fitted at any of the {len(self.points)} settings."
        closest = min(fitted, key=lambda p: len(p.reasons))
        return (f"No setting is safe to roll out: none of the {len(self.points)} settings meets {targets} at its {level} "
                f"confidence bound on the hold-out window. Closest: {closest.label} ({'; '.join(closest.reasons)}).")

    @property
    def out_of_range(self) -> list[OutOfRange]:
        """Hold-out estimates outside their metric's range (policy: ``baseline`` or the setting's label); never clipped."""
        frames = [(p.label, p.estimates) for p in self.points if p.estimates is not None]
        return [f for label, est in [("baseline", self.baseline), *frames]
                for f in out_of_range(est.with_columns(pl.lit(label).alias("policy")), {})]

    def frame(self) -> pl.DataFrame:
        """Every fitted point's estimates in long form, with its settings and status (the rows of tune.csv)."""
        parts = [p.estimates.with_columns(pl.lit(p.label).alias("point"), pl.lit(p.status).alias("status"),
                                          *(pl.lit(float(v)).alias(k) for k, v in p.settings.items()))
                 for p in self.points if p.estimates is not None]
        base = self.baseline.with_columns(pl.lit("baseline").alias("point"), pl.lit("baseline").alias("status"))
        return pl.concat([base, *parts], how="diagonal").select("point", "status", *sorted(self.tune.grid), *ESTIMATE_COLUMNS)


def _targets(tune: TuneConfig) -> dict[str, float]:
    return {k: getattr(tune, k) for k in TARGETS if getattr(tune, k) is not None}


def split_by_time(dataset: BanditDataset, fraction: float) -> tuple[npt.NDArray[np.bool_], Any]:
    """Rows before the time ``fraction`` of the way through the log (training), and that time."""
    ts = dataset.logs["ts"]
    start, end = ts.min(), ts.max()
    split_at = start + (end - start) * fraction  # type: ignore[operator]
    train = (ts < split_at).to_numpy()
    if train.sum() < 100 or (~train).sum() < 100:
        raise ConfigError(f"[tune] train_fraction {fraction} leaves {int(train.sum())} training and {int((~train).sum())} "
                          "hold-out requests; each window needs at least 100.")
    return train, split_at


def _grid(tune: TuneConfig) -> list[dict[str, float]]:
    keys = sorted(tune.grid)
    return [dict(zip(keys, map(float, values), strict=True)) for values in itertools.product(*(tune.grid[k] for k in keys))]


def _label(settings: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in settings.items())


def _judge(estimates: pl.DataFrame, tune: TuneConfig) -> tuple[str, ...]:
    """The rollout targets a point misses at its conservative bound (empty: safe)."""
    misses = []
    for key, target in _targets(tune).items():
        metric, bound, sense = TARGETS[key]
        got = float(estimates.filter((pl.col("metric") == metric) & (pl.col("kind") == "value"))[bound][0])
        if not sense * (got - target) >= 0:
            misses.append(f"{metric} {bound.replace('ci_', '')} bound {got:.4g} vs {key} = {target:g}")
    return tuple(misses)


def run_tune(cfg: ExperimentConfig, *, show_progress: bool = True) -> TuneResult:
    """Fit on the training window, sweep the grid, judge every setting on the hold-out window."""
    if cfg.tune is None:
        raise ConfigError(f"{cfg.source}: `ope tune` needs a [tune] section (see configs/tune.toml).")
    tune, t0 = cfg.tune, time.perf_counter()
    grid = _grid(tune)
    base_cfg = next(p for p in cfg.policies if p.name == tune.policy)
    baseline_name = cfg.evaluation.baseline
    baseline = build_policies(cfg.policies, baseline_name, cfg.source)[baseline_name]
    engine = MemoryEngine()
    plan = Plan.of(cfg)
    data = engine.load(plan, {}, show_progress=show_progress)
    if tune.min_satisfaction is not None and not data.facts.feedback:
        raise ConfigError(f"{cfg.source}: [tune] min_satisfaction is set, but no successful request in the log has a "
                          "satisfaction value: drop the target or bring logs with feedback.")
    train, split_at = split_by_time(data.dataset, tune.train_fraction)
    # the baseline, like the router, learns from the training window only
    fitted = fit_run(plan, {baseline_name: baseline}, data, train=train, needs_models=True, show_progress=show_progress)
    assert fitted.models is not None
    timings = {"models": time.perf_counter() - t0}
    # each setting checks T one-sided bounds of a two-sided interval: G·T·α'/2 ≤ α (Bonferroni over the search)
    alpha = 2 * cfg.evaluation.alpha / (len(grid) * len(_targets(tune))) if tune.simultaneous else cfg.evaluation.alpha
    judged = _judging_plan(fitted.plan, alpha)
    whole = fitted.whole_log(data)
    hold = BatchRows(whole.dataset.subset(~train), whole.feedback.subset(~train), fitted.models.q_hat[~train])
    training = BatchRows(whole.dataset.subset(train), whole.feedback.subset(train), fitted.models.q_hat[train])
    tails = ResidualSpread.fit(whole.dataset, fitted.models.q_hat, fitted.models.folds >= 0).tail_model()
    points, routers = _fit_settings(grid, tune, base_cfg, training, hold, fitted.plan, data.facts.feedback, show_progress, tails)
    estimates, failed = _evaluate_settings(judged, baseline, routers, hold, data.facts.feedback)
    points = [_judged(p, estimates, failed, tune, judged) for p in points]
    safe = [i for i, p in enumerate(points) if p.status == "safe"]
    recommended = min(safe, key=lambda i: (points[i].value("cost_usd"), i)) if safe else None
    timings["sweep"] = time.perf_counter() - t0 - timings["models"]
    notes = fitted.notes + [f"Training window: {int(train.sum())} requests before {split_at}; hold-out window: {int((~train).sum())} "
                            "requests from then on. Outcome models were cross-fitted on the training window only."]
    return TuneResult(fitted.plan.config, tune, data.dataset, train, split_at, judged.headline.name, alpha, points,
                      estimates.filter(pl.col("policy") == baseline_name), recommended, tuple(notes), timings, fitted.models)


def _judging_plan(plan: Plan, alpha: float) -> Plan:
    """The headline estimator alone, at the sweep's level."""
    cfg = plan.config
    cfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, alpha=alpha))
    return Plan(cfg, (plan.headline,), plan.inference)


def _fit_settings(grid: list[dict[str, float]], tune: TuneConfig, base_cfg: PolicyConfig, training: BatchRows, hold: BatchRows,
                  plan: Plan, feedback: bool, show_progress: bool, tails: TailModel) -> tuple[list[TunePoint], dict[str, Policy]]:
    """The router fitted at every setting on the training window (and, where it certifies, its targets certified on the
    training window's held-out folds, `ope.evaluation.certify`): infeasible points, and the fitted routers by name.
    A setting with a p95 target routes on ``tails``, the residual spread of the training window's TTFT and latency models."""
    weighted, folds = any(e.name != "DM" for e in plan.estimators), plan.config.predictors.folds
    points, routers = [], {}
    pairs = Pairs.of(hold.dataset.eligible)
    with warnings.catch_warnings(), progress("sweeping settings", total=len(grid), enabled=show_progress) as bar:
        warnings.simplefilter("ignore", RuntimeWarning)   # a rule missing a target on the training window: judged below
        for settings in grid:
            label = _label(settings)
            policy_cfg = PolicyConfig(name=f"{tune.policy}[{label}]", kind="constrained", params={**base_cfg.params, **settings})
            try:
                policy = build_policy(policy_cfg)
                if any(t.quantile is not None for t in declared_targets(policy)):
                    policy.use_tail_model(tails)  # type: ignore[attr-defined]
                if policy.certify_settings() is not None:
                    fit_cross_fitted(policy, training, folds, weighted=weighted, feedback=feedback, inference=plan.inference)
                else:
                    policy.fit(training.dataset, training.q_hat)
                policy_target(policy, hold.dataset, pairs, hold.q_hat)  # a rule that cannot route the hold-out window
            except (PolicyError, ConfigError) as exc:
                points.append(TunePoint(label, settings, "infeasible", (str(exc).splitlines()[-1],)))
            else:
                routers[policy_cfg.name] = policy
                points.append(TunePoint(label, settings, "fitted", (), policy=policy))
            bar.update(1)
    return points, routers


def _evaluate_settings(plan: Plan, baseline: Policy, routers: dict[str, Policy], hold: BatchRows,
                       feedback: bool) -> tuple[pl.DataFrame, dict[tuple[str, str], str]]:
    """The baseline and every fitted setting on the hold-out window, in one pass of the run's per-batch evaluation."""
    policies = {plan.baseline: baseline, **routers}
    ctx = BatchContext(plan, hold.dataset.catalog, policies, None, None, feedback, groups=False)
    sums = ctx.empty()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)  # kept in the estimates' ess and the report
        evaluate_batch(ctx, hold, sums)
    estimates, _ = estimate_table(plan, sums.parts, sums.failed, ctx.names, [])
    return (estimates if feedback else blank_metric(estimates, "satisfaction")), sums.failed


def _judged(point: TunePoint, estimates: pl.DataFrame, failed: dict[tuple[str, str], str], tune: TuneConfig, plan: Plan) -> TunePoint:
    """A fitted point with its hold-out estimates and verdict."""
    if point.policy is None:
        return point
    name, estimator = point.policy.name, plan.headline.name
    if (name, estimator) in failed:  # e.g. no overlap with the hold-out log: cannot be shown safe
        return dataclasses.replace(point, status="unsafe", reasons=(f"{estimator} cannot estimate it: {failed[(name, estimator)]}",),
                                   policy=point.policy)
    mine = estimates.filter(pl.col("policy") == name)
    misses = _judge(mine, tune)
    return dataclasses.replace(point, status="unsafe" if misses else "safe", reasons=misses, estimates=mine)
