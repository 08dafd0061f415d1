"""A run: plan → fit (on the whole log or a sample) → ``engine.evaluate(batches)`` → merge → finalize.

Every engine (`ope.evaluation.engines`) evaluates its batches with the same per-batch function and
the same partial sums, so the tables below are built once, from the merged sums, whatever the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ope.config import ExperimentConfig
from ope.data.dataset import BanditDataset
from ope.data.facts import DataFacts
from ope.errors import ConfigError
from ope.evaluation.actions import ActionFiles
from ope.evaluation.batch import BatchContext
from ope.evaluation.certify import Certification
from ope.evaluation.distributions import CDF_SCHEMA, QUANTILE_SCHEMA, DistributionSpec, distribution_tables
from ope.evaluation.engines import Engine, engine_for
from ope.evaluation.fit import drop_training_rows, fit_run
from ope.evaluation.plan import Plan, fallback_note, no_feedback_note, sample_note
from ope.evaluation.ranges import OutOfRange, out_of_range
from ope.evaluation.registry import build_policies
from ope.evaluation.replay import replay_rows
from ope.evaluation.tables import ESTIMATE_SCHEMA, blank_metric, estimate_table
from ope.evaluation.targets import FAILS, TargetCheck, check_targets
from ope.models.predictors import OutcomeModels
from ope.models.propensity import PropensityModel
from ope.text import count as plural
from policies import Policy

__all__ = ["RunResult", "run_experiment"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything a report needs.

    ``training`` holds the rows models and learning policies were fitted on (the whole log, or a
    streamed run's sample); ``facts`` describe every valid row of the log; ``evaluated_rows`` were
    evaluated, and ``actions`` hold each policy's probabilities on them (a cross-fitted policy's: those of
    its fold copies). ``policies`` are the policies as fitted on every training row (what one deploys);
    ``evaluated_as`` says how each learning policy was evaluated; ``targets`` check every declared target
    against the headline estimate; ``certificates`` are the constrained routers' target certificates.
    """

    config: ExperimentConfig
    engine: str
    policies: dict[str, Policy]
    estimates: pl.DataFrame
    diagnostics: dict[str, dict[str, Any]]
    slices: pl.DataFrame
    breakdowns: pl.DataFrame
    shares: pl.DataFrame
    facts: DataFacts
    training: BanditDataset
    evaluated_rows: int
    actions: ActionFiles
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    outcome_models: OutcomeModels | None = None
    propensity_model: PropensityModel | None = None
    streamed: dict[str, Any] | None = None
    weight_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: tuple[TargetCheck, ...] = ()
    certificates: dict[str, Certification] = field(default_factory=dict)
    evaluated_as: dict[str, str] = field(default_factory=dict)
    quantiles: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=QUANTILE_SCHEMA))
    cdfs: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CDF_SCHEMA))

    @property
    def names(self) -> list[str]:
        """Policy names in config order."""
        return list(self.policies)

    @property
    def out_of_range(self) -> list[OutOfRange]:
        """Estimates outside their metric's range (a probability above 1, a negative time), with reason and advice."""
        return out_of_range(self.estimates, self.diagnostics)

    @property
    def warnings(self) -> list[str]:
        """Everything a reader must see first: targets missed, rows set aside, run notes, impossible values, then support
        and overlap warnings."""
        q = self.facts.quarantined
        out = [t.warning for t in self.targets if t.verdict == FAILS]
        out += [f"{plural(q, 'row')} failed validation and were set aside (quarantine file)."] if q else []
        out += list(self.notes) + [f.message() for f in self.out_of_range]
        return out + sorted({f"{p}: {w}" for p, d in self.diagnostics.items() for e in d.values() for w in e["warnings"]})

    @property
    def propensity_source(self) -> str:
        """"logged" or "estimated" (from a cross-fitted model)."""
        return "logged" if self.propensity_model is None else "estimated"


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = True, engine: Engine | None = None,
                   policies: dict[str, Policy] | None = None) -> RunResult:
    """Evaluate every policy of ``cfg`` with every estimator and compare each with the baseline.

    ``engine`` defaults to the one ``[data]`` asks for (`ope.evaluation.engines.engine_for`); ``policies``
    (unfitted policy objects by name) replaces the config's policies.
    """
    t0 = time.perf_counter()
    plan = Plan.of(cfg)
    if policies is None:
        policies = build_policies(cfg.policies, cfg.evaluation.baseline, cfg.source)
    elif cfg.evaluation.baseline not in policies:
        raise ConfigError(f"The baseline '{cfg.evaluation.baseline}' is not among the policies {list(policies)}.")
    engine = engine_for(plan) if engine is None else engine
    engine.check(plan, policies)
    data = engine.load(plan, policies, show_progress=show_progress)
    timings = {"load": time.perf_counter() - t0}
    fitted = fit_run(plan, policies, data, show_progress=show_progress)
    plan, notes = fitted.plan, fitted.notes
    timings["fit"] = time.perf_counter() - t0 - timings["load"]
    written = tuple(cfg.output.written(list(policies)))
    spec = DistributionSpec.of(plan, data.facts, fitted.models, data.dataset)
    ctx = BatchContext(plan, data.dataset.catalog, fitted.evaluated, fitted.models, data.vocab, data.facts.feedback, fitted.propensity,
                       actions=written, distributions=spec)
    actions = ActionFiles(list(written))
    try:
        if not data.whole_log:  # a streamed sample served the fit; keep only what the report saves
            drop_training_rows(fitted)
        sums = engine.evaluate(ctx, fitted, data, actions, show_progress=show_progress)
    except BaseException:  # e.g. Ctrl-C or a bad batch: no half-written action files left behind
        actions.discard()
        raise
    notes += [fallback_note(name, sums.fallback[name], p.fallback_rule) for name, p in fitted.evaluated.items() if sums.fallback[name]]
    if data.facts.rows > data.dataset.n and (plan.needs_q_hat or fitted.propensity is not None or any(p.learns for p in policies.values())):
        notes.append(sample_note(data.dataset.n, data.facts.rows))
    estimates, diagnostics = estimate_table(plan, sums.parts, sums.failed, ctx.names, notes)
    online = [name for name, p in policies.items() if p.online]
    if online:
        whole = fitted.whole_log(data)
        replayed = [row for name in online for row in replay_rows(name, policies[name], whole, plan.alpha, notes)]
        estimates = _in_policy_order(pl.concat([estimates, pl.DataFrame(replayed, schema=ESTIMATE_SCHEMA)]), ctx.names)
    assert sums.groups is not None and sums.shares is not None
    slices, breakdowns = sums.groups.slices(ctx.names), sums.groups.breakdowns(ctx.names)
    if not data.facts.feedback:
        notes.append(no_feedback_note())
        estimates, slices, breakdowns = (blank_metric(f, "satisfaction") for f in (estimates, slices, breakdowns))
    quantiles, cdfs = (pl.DataFrame(schema=QUANTILE_SCHEMA), pl.DataFrame(schema=CDF_SCHEMA)) if spec is None or sums.cdfs is None \
        else distribution_tables(spec, sums.cdfs, ctx.names, plan.baseline, plan.alpha, notes)
    timings["evaluate"] = time.perf_counter() - t0 - sum(timings.values())
    targets = tuple(check_targets(policies, estimates, plan.headline.name, quantiles))
    return RunResult(plan.config, engine.name, policies, estimates, diagnostics, slices, breakdowns,
                     sums.shares.frame(data.dataset.catalog), data.facts, data.dataset, sums.rows, actions, tuple(notes), timings,
                     fitted.models, fitted.propensity, engine.streamed(plan),
                     {} if sums.weights is None else sums.weights.shares(), targets, fitted.certificates, fitted.evaluated_as,
                     quantiles, cdfs)


def _in_policy_order(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Rows grouped by policy in config order, keeping their order within a policy."""
    order = {name: i for i, name in enumerate(names)}
    return frame.with_columns(pl.col("policy").replace_strict(order, return_dtype=pl.Int64).alias("_order")) \
        .sort("_order", maintain_order=True).drop("_order")
