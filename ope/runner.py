"""The experiment runner: dataset → policies → estimators → results, one direction."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import ESTIMATORS, BaseEstimator, Bootstrap, EmpiricalBernstein, Estimate, Normal, SupportWarning
from estimators.inference import Inference
from ope.config import ExperimentConfig
from ope.dataset import BanditDataset
from ope.errors import ConfigError
from ope.progress import progress
from ope.registry import build_policy
from ope.schema import METRICS
from policies import Policy

__all__ = ["RunResult", "run_experiment", "ESTIMATE_COLUMNS"]

ESTIMATE_COLUMNS = ["policy", "metric", "estimator", "kind", "value", "stderr", "ci_low", "ci_high", "n", "ess"]
MODEL_FREE = {"IPS", "SNIPS"}


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
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)


def _inference(cfg: ExperimentConfig) -> Inference:
    kind = cfg.evaluation.inference
    if kind == "normal":
        return Normal()
    if kind == "bootstrap":
        return Bootstrap(n_replicates=cfg.evaluation.bootstrap_replicates)
    if kind == "bernstein":
        return EmpiricalBernstein()
    raise ConfigError(f"{cfg.source}: [evaluation] inference must be normal, bootstrap or bernstein. Got '{kind}'.")


def _estimators(cfg: ExperimentConfig) -> list[BaseEstimator]:
    out = []
    for name in cfg.evaluation.estimators:
        if name not in ESTIMATORS:
            raise ConfigError(f"{cfg.source}: unknown estimator '{name}' (known: {', '.join(ESTIMATORS)}).")
        if name not in MODEL_FREE:
            msg = f"{cfg.source}: estimator '{name}' needs a reward model (q_hat); this version evaluates IPS and SNIPS only."
            raise ConfigError(msg)
        out.append(ESTIMATORS[name]())
    return out


def _rows(policy: str, estimate: Estimate, kind: str) -> list[dict[str, Any]]:
    cols = [np.atleast_1d(np.asarray(getattr(estimate, c), dtype=float)) for c in ("value", "stderr", "ci_low", "ci_high", "n")]
    return [
        {"policy": policy, "metric": m, "estimator": estimate.estimator, "kind": kind,
         "value": cols[0][j], "stderr": cols[1][j], "ci_low": cols[2][j], "ci_high": cols[3][j], "n": cols[4][j], "ess": estimate.ess}
        for j, m in enumerate(METRICS)
    ]


def _time_slices(dataset: BanditDataset, probabilities: dict[str, npt.NDArray[np.float64]], estimator: BaseEstimator,
                 every: str, alpha: float) -> pl.DataFrame:
    """Per-period values of every policy (one estimator): service quality is not stationary."""
    period = dataset.logs["ts"].dt.truncate(every)
    rows = []
    for start in period.unique().sort().to_list():
        mask = (period == start).to_numpy()
        if mask.sum() < 50:
            continue
        fb = dataset.to_feedback().subset(mask)
        for name, pi in probabilities.items():
            est = estimator.estimate(fb, target=pi[mask], alpha=alpha)
            for row in _rows(name, est, "value"):
                rows.append({"period": start, **row})
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"period": pl.Datetime("us", "UTC"), **{c: pl.Float64 for c in ESTIMATE_COLUMNS}})


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = True) -> RunResult:
    """Load, fit the policies, evaluate every policy with every estimator, and compare to the baseline."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    estimators = _estimators(cfg)
    inference = _inference(cfg)
    policies = {p.name: build_policy(p) for p in cfg.policies}
    if cfg.evaluation.baseline not in policies:
        msg = f"{cfg.source}: baseline '{cfg.evaluation.baseline}' is not among the policies {list(policies)}."
        raise ConfigError(msg)
    with progress("loading and validating logs", total=None, enabled=show_progress):
        dataset = BanditDataset.load(cfg.data.logs, cfg.data.catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms,
                                     quarantine=cfg.data.quarantine)
    timings["load"] = time.perf_counter() - t0
    fb = dataset.to_feedback()
    probabilities: dict[str, npt.NDArray[np.float64]] = {}
    notes: list[str] = []
    with progress("fitting policies", total=len(policies), enabled=show_progress) as bar:
        for name, policy in policies.items():
            probabilities[name] = policy.fit(dataset).action_probabilities(dataset)
            fallback = getattr(policy, "n_fallback_", 0)
            if fallback:
                notes.append(f"{name}: {fallback} requests had no eligible official endpoint and were routed by its fallback ({policy.fallback}).")  # type: ignore[attr-defined]
            bar.update(1)
    timings["policies"] = time.perf_counter() - t0 - timings["load"]
    base = probabilities[cfg.evaluation.baseline]
    rows: list[dict[str, Any]] = []
    diagnostics: dict[str, dict[str, Any]] = {}
    alpha = cfg.evaluation.alpha
    with warnings.catch_warnings(), progress("estimating", total=len(policies) * len(estimators), enabled=show_progress) as bar:
        warnings.simplefilter("ignore", SupportWarning)  # they are kept in the diagnostics and the report
        for name, pi in probabilities.items():
            for est in estimators:
                value = est.estimate(fb, target=pi, inference=inference, alpha=alpha)
                rows += _rows(name, value, "value")
                diagnostics.setdefault(name, {})[est.name] = value.diagnostics.to_dict()
                if name != cfg.evaluation.baseline:
                    diff = est.estimate_difference(fb, target=pi, baseline=base, inference=inference, alpha=alpha)
                    rel = est.estimate_difference(fb, target=pi, baseline=base, inference=inference, alpha=alpha, relative=True)
                    rows += _rows(name, diff, "difference") + _rows(name, rel, "relative")
                bar.update(1)
    estimates = pl.DataFrame(rows, schema={c: (pl.String if c in ("policy", "metric", "estimator", "kind") else pl.Float64) for c in ESTIMATE_COLUMNS})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        slices = _time_slices(dataset, probabilities, estimators[-1], cfg.evaluation.time_slice, alpha)
    timings["estimate"] = time.perf_counter() - t0 - timings["load"] - timings["policies"]
    return RunResult(cfg, dataset, policies, probabilities, estimates, diagnostics, slices, tuple(notes), timings)
