"""The experiment runner: dataset → policies → estimators → results, one direction."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import ESTIMATORS, BanditFeedback, BaseEstimator, Bootstrap, EmpiricalBernstein, Normal, SupportWarning
from estimators.batch import prepare
from estimators.inference import Inference
from ope.breakdown import ESTIMATE_COLUMNS, breakdowns, estimate_rows, provider_shares, time_slices
from ope.config import ExperimentConfig
from ope.dataset import BanditDataset
from ope.errors import ConfigError
from ope.predictors import OutcomeModels, fit_outcome_models
from ope.progress import progress
from ope.propensity import PropensityModel, fit_propensities
from ope.registry import build_policy
from policies import Policy

__all__ = ["RunResult", "run_experiment", "primary_estimator", "build_estimators", "build_inference", "load_for_run", "ESTIMATE_COLUMNS"]

#: in a run, the tunable estimators choose their hyperparameter from the data
RUN_SETTINGS: dict[str, dict[str, str]] = {"SwitchDR": {"threshold": "auto"}, "DRos": {"shrinkage": "auto"}}


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything a report needs: the dataset, each policy's probabilities and all estimates."""

    config: ExperimentConfig
    dataset: BanditDataset
    policies: dict[str, Policy]
    probabilities: dict[str, npt.NDArray[np.float64]]
    estimates: pl.DataFrame
    diagnostics: dict[str, dict[str, Any]]
    slices: pl.DataFrame
    breakdowns: pl.DataFrame
    shares: pl.DataFrame
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    outcome_models: OutcomeModels | None = None
    propensity_model: PropensityModel | None = None

    @property
    def warnings(self) -> list[str]:
        """Everything a reader must see first: rows set aside, run notes, then support and overlap warnings."""
        out = [f"{self.dataset.n_quarantined} rows failed validation and were set aside (quarantine file)."] if self.dataset.n_quarantined else []
        out += list(self.notes)
        return out + sorted({f"{p}: {w}" for p, d in self.diagnostics.items() for e in d.values() for w in e["warnings"]})

    @property
    def propensity_source(self) -> str:
        """"logged" or "estimated" (from a cross-fitted model)."""
        return "logged" if self.propensity_model is None else "estimated"


PREFERENCE = ("DR", "SNDR", "DRos", "SwitchDR", "SNIPS", "IPS", "DM")


def primary_estimator(estimators: list[str] | tuple[str, ...]) -> str:
    """The estimator headlines quote: the most robust one the run computed."""
    return next((e for e in PREFERENCE if e in estimators), estimators[0])


def build_inference(cfg: ExperimentConfig) -> Inference:
    """The interval method of [evaluation] inference."""
    kind = cfg.evaluation.inference
    if kind == "normal":
        return Normal()
    if kind == "bootstrap":
        return Bootstrap(n_replicates=cfg.evaluation.bootstrap_replicates)
    if kind == "bernstein":
        return EmpiricalBernstein()
    raise ConfigError(f"{cfg.source}: [evaluation] inference must be normal, bootstrap or bernstein. Got '{kind}'.")


def build_estimators(cfg: ExperimentConfig) -> list[BaseEstimator]:
    """The estimators of [evaluation] estimators, tunable ones choosing their hyperparameter from the data."""
    out = []
    for name in cfg.evaluation.estimators:
        if name not in ESTIMATORS:
            raise ConfigError(f"{cfg.source}: unknown estimator '{name}' (known: {', '.join(ESTIMATORS)}).")
        out.append(ESTIMATORS[name](**RUN_SETTINGS.get(name, {})))
    return out


def load_for_run(cfg: ExperimentConfig, *, show_progress: bool = True) -> tuple[BanditDataset, BanditFeedback, PropensityModel | None, list[str]]:
    """The validated dataset and its feedback, with propensities estimated (and a loud note) where the log has none."""
    with progress("loading and validating logs", total=None, enabled=show_progress):
        dataset = BanditDataset.load(cfg.data.logs, cfg.data.catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms,
                                     quarantine=cfg.data.quarantine)
    notes: list[str] = []
    propensity_model = None
    if not dataset.has_propensities():
        propensity_model = fit_propensities(dataset, cfg.predictors, show_progress=show_progress)
        missing = int(np.isnan(dataset.propensities).sum())
        notes.append(
            f"PROPENSITIES WERE ESTIMATED: {missing} of {dataset.n} rows have no logged propensity, so every row uses a "
            "cross-fitted model of the logging policy. Importance-weighted numbers are only as good as that model "
            f"(calibration error {propensity_model.diagnostics['calibration_error']:.4f}, implied mean weight of a uniform "
            f"policy {propensity_model.diagnostics['uniform_mean_weight']:.3f}, should be ≈ 1)."
        )
    fb = dataset.to_feedback(None if propensity_model is None else propensity_model.propensities)
    return dataset, fb, propensity_model, notes


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = True) -> RunResult:
    """Load, fit the policies, evaluate every policy with every estimator, and compare to the baseline."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    estimators = build_estimators(cfg)
    inference = build_inference(cfg)
    policies = {p.name: build_policy(p) for p in cfg.policies}
    if cfg.evaluation.baseline not in policies:
        msg = f"{cfg.source}: baseline '{cfg.evaluation.baseline}' is not among the policies {list(policies)}."
        raise ConfigError(msg)
    dataset, fb, propensity_model, notes = load_for_run(cfg, show_progress=show_progress)
    timings["load"] = time.perf_counter() - t0
    outcome_models = None
    if any(e.needs_q_hat for e in estimators) or any(getattr(p, "needs_q_hat", False) for p in policies.values()):
        outcome_models = fit_outcome_models(dataset, cfg.predictors, show_progress=show_progress)
    q_hat = None if outcome_models is None else outcome_models.q_hat
    timings["models"] = time.perf_counter() - t0 - timings["load"]
    probabilities: dict[str, npt.NDArray[np.float64]] = {}
    with progress("fitting policies", total=len(policies), enabled=show_progress) as bar:
        for name, policy in policies.items():
            args = (dataset, q_hat) if getattr(policy, "needs_q_hat", False) else (dataset,)
            probabilities[name] = policy.fit(*args).action_probabilities(*args)
            fallback = getattr(policy, "n_fallback_", 0)
            if fallback:
                notes.append(f"{name}: {fallback} requests had no eligible official endpoint and were routed by its fallback ({policy.fallback}).")  # type: ignore[attr-defined]
            bar.update(1)
    timings["policies"] = time.perf_counter() - t0 - timings["load"] - timings["models"]
    base = probabilities[cfg.evaluation.baseline]
    rows: list[dict[str, Any]] = []
    diagnostics: dict[str, dict[str, Any]] = {}
    alpha = cfg.evaluation.alpha
    with warnings.catch_warnings(), progress("estimating", total=len(policies) * len(estimators), enabled=show_progress) as bar:
        warnings.simplefilter("ignore", SupportWarning)  # they are kept in the diagnostics and the report
        for name, pi in probabilities.items():
            paired = name != cfg.evaluation.baseline
            batch = prepare(fb, target=pi, baseline=base if paired else None, q_hat=q_hat)
            for est in estimators:
                part = est.accumulate(batch, n_boot=inference.n_boot, seed=inference.seed)
                value = est.finalize(part, inference=inference, alpha=alpha, kind="value")
                rows += estimate_rows(name, value, "value")
                diagnostics.setdefault(name, {})[est.name] = value.diagnostics.to_dict()
                for kind in ("difference", "relative") if paired else ():
                    rows += estimate_rows(name, est.finalize(part, inference=inference, alpha=alpha, kind=kind), kind)
                bar.update(1)
    estimates = pl.DataFrame(rows, schema={c: (pl.String if c in ("policy", "metric", "estimator", "kind") else pl.Float64) for c in ESTIMATE_COLUMNS})
    headline = next(e for e in estimators if e.name == primary_estimator([e.name for e in estimators]))
    slices = time_slices(fb, dataset, probabilities, headline, q_hat, cfg.evaluation.time_slice, alpha)
    groups = breakdowns(fb, dataset, probabilities, headline, q_hat, alpha)
    timings["estimate"] = time.perf_counter() - t0 - sum(timings.values())
    return RunResult(cfg, dataset, policies, probabilities, estimates, diagnostics, slices, groups,
                     provider_shares(dataset, probabilities), tuple(notes), timings, outcome_models, propensity_model)
