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

import itertools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import EstimatorInputError, SupportWarning
from estimators.batch import prepare
from ope.evaluation.breakdown import ESTIMATE_COLUMNS, estimate_rows
from ope.config import ExperimentConfig, PolicyConfig, TuneConfig
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError
from ope.data.overlap import detect_deterministic_router
from ope.models.predictors import OutcomeModels, fit_outcome_models
from ope.progress import progress
from ope.evaluation.registry import build_policy
from ope.evaluation.run import (
    blank_metric,
    build_estimators,
    build_inference,
    load_for_run,
    model_based_only,
    primary_estimator,
)
from policies import Policy, PolicyError

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
    def verdict(self) -> str:
        """One plain sentence: the recommended setting, or why there is none."""
        targets = ", ".join(f"{k} = {v:g}" for k, v in _targets(self.tune).items())
        level = f"{1 - self.alpha:.4g}"
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
    tune, timings, t0 = cfg.tune, {}, time.perf_counter()
    inference = build_inference(cfg)
    grid = _grid(tune)
    # each setting checks T one-sided bounds of a two-sided interval: G·T·α'/2 ≤ α (Bonferroni over the search)
    alpha = 2 * cfg.evaluation.alpha / (len(grid) * len(_targets(tune))) if tune.simultaneous else cfg.evaluation.alpha
    base_cfg = next(p for p in cfg.policies if p.name == tune.policy)
    baseline_cfg = next((p for p in cfg.policies if p.name == cfg.evaluation.baseline), None)
    if baseline_cfg is None:
        raise ConfigError(f"{cfg.source}: baseline '{cfg.evaluation.baseline}' is not among the policies.")
    dataset, fb, propensity_model, notes = load_for_run(cfg, show_progress=show_progress)
    feedback = dataset.has_satisfaction_feedback()
    if tune.min_satisfaction is not None and not feedback:
        raise ConfigError(f"{cfg.source}: [tune] min_satisfaction is set, but no successful request in the log has a "
                          "satisfaction value: drop the target or bring logs with feedback.")
    if propensity_model is not None:
        cfg = model_based_only(cfg, detect_deterministic_router(dataset.logs, dataset.eligible), notes)
    estimator = next(e for e in build_estimators(cfg) if e.name == primary_estimator(cfg.evaluation.estimators))
    train, split_at = split_by_time(dataset, tune.train_fraction)
    hold = ~train
    models = fit_outcome_models(dataset, cfg.predictors, train=train, show_progress=show_progress)
    timings["models"] = time.perf_counter() - t0
    train_ds, hold_ds = dataset.subset(train), dataset.subset(hold)
    q_train, q_hold, fb_hold = models.q_hat[train], models.q_hat[hold], fb.subset(hold)

    def evaluate(name: str, pi: npt.NDArray[np.float64], paired: bool) -> pl.DataFrame:
        batch = prepare(fb_hold, target=pi, baseline=base_pi if paired else None, q_hat=q_hold)
        part = estimator.accumulate(batch, n_boot=inference.n_boot, seed=inference.seed)
        kinds = ("value", "difference", "relative") if paired else ("value",)
        frame = pl.DataFrame([r for kind in kinds for r in estimate_rows(
            name, estimator.finalize(part, inference=inference, alpha=alpha, kind=kind), kind)]).select(ESTIMATE_COLUMNS)
        return frame if feedback else blank_metric(frame, "satisfaction")

    baseline = build_policy(baseline_cfg)
    learns_on_q = getattr(baseline, "needs_q_hat", False)
    points = []
    with warnings.catch_warnings(), progress("sweeping settings", total=len(grid), enabled=show_progress) as bar:
        warnings.simplefilter("ignore", SupportWarning)   # kept in the estimates' ess and the report
        warnings.simplefilter("ignore", RuntimeWarning)   # a rule missing a target on the training window: judged below
        baseline.fit(*((train_ds, q_train) if learns_on_q else (train_ds,)))  # learns, like the router, from the training window
        base_pi = baseline.action_probabilities(*((hold_ds, q_hold) if learns_on_q else (hold_ds,)))
        baseline_estimates = evaluate(baseline_cfg.name, base_pi, paired=False)
        for settings in grid:
            label = _label(settings)
            policy_cfg = PolicyConfig(name=f"{tune.policy}[{label}]", kind="constrained", params={**base_cfg.params, **settings})
            try:
                policy = build_policy(policy_cfg).fit(train_ds, q_train)  # type: ignore[call-arg]
                pi = policy.action_probabilities(hold_ds, q_hold)  # type: ignore[call-arg]
            except (PolicyError, ConfigError) as exc:
                points.append(TunePoint(label, settings, "infeasible", (str(exc).splitlines()[-1],)))
            else:
                try:
                    estimates = evaluate(policy_cfg.name, pi, paired=True)
                except EstimatorInputError as exc:  # e.g. no overlap with the hold-out log: cannot be shown safe
                    points.append(TunePoint(label, settings, "unsafe", (f"{estimator.name} cannot estimate it: {exc}",)))
                else:
                    misses = _judge(estimates, tune)
                    points.append(TunePoint(label, settings, "unsafe" if misses else "safe", misses, estimates, policy))
            bar.update(1)
    safe = [i for i, p in enumerate(points) if p.status == "safe"]
    recommended = min(safe, key=lambda i: (points[i].value("cost_usd"), i)) if safe else None
    timings["sweep"] = time.perf_counter() - t0 - timings["models"]
    notes.append(f"Training window: {int(train.sum())} requests before {split_at}; hold-out window: {int(hold.sum())} requests "
                 "from then on. Outcome models were cross-fitted on the training window only.")
    return TuneResult(cfg, tune, dataset, train, split_at, estimator.name, alpha, points,
                      baseline_estimates, recommended, tuple(notes), timings, models)
