"""The experiment runner: dataset → policies → estimators → results, one direction."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import (
    ESTIMATORS,
    BanditFeedback,
    BaseEstimator,
    Bootstrap,
    EmpiricalBernstein,
    EstimatorInputError,
    Normal,
    OnlinePolicy,
    Replay,
    SupportWarning,
)
from estimators.batch import Shared
from estimators.inference import Inference
from ope.evaluation.breakdown import ESTIMATE_COLUMNS, breakdowns, estimate_rows, missing_row, provider_shares, time_slices
from ope.config import ExperimentConfig
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError
from ope.data.overlap import OverlapFinding, detect_deterministic_router
from ope.models.predictors import OutcomeModels, fit_outcome_models
from ope.progress import progress
from ope.models.propensity import PropensityModel, fit_propensities
from ope.evaluation.registry import build_policy
from ope.data.schema import METRICS
from policies import Policy
from policies.stream import time_order

if TYPE_CHECKING:
    from ope.evaluation.engines.local import StreamInfo

__all__ = ["ESTIMATE_COLUMNS", "RunResult", "build_estimators", "blank_metric", "build_inference", "estimated_note", "load_for_run", "model_based_only",
           "primary_estimator", "run_experiment"]

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
    #: set by a streamed run (`ope.evaluation.engines.local`): then ``dataset`` is the training sample, ``probabilities`` hold no rows
    stream: StreamInfo | None = None

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
        notes.append(estimated_note(int(np.isnan(dataset.propensities).sum()), dataset.n, propensity_model))
    fb = dataset.to_feedback(None if propensity_model is None else propensity_model.propensities,
                             fill_satisfaction=not dataset.has_satisfaction_feedback())
    return dataset, fb, propensity_model, notes


def estimated_note(missing: int, rows: int, model: PropensityModel) -> str:
    """The loud note of a run whose propensities were estimated."""
    return (f"PROPENSITIES WERE ESTIMATED: {missing} of {rows} rows have no logged propensity, so every row uses a "
            "cross-fitted model of the logging policy. Importance-weighted numbers are only as good as that model "
            f"(calibration error {model.diagnostics['calibration_error']:.4f}, implied mean weight of a uniform "
            f"policy {model.diagnostics['uniform_mean_weight']:.3f}, should be ≈ 1).")


def model_based_only(cfg: ExperimentConfig, finding: OverlapFinding, notes: list[str]) -> ExperimentConfig:
    """The config with only model-based estimators when the log was routed deterministically (no overlap to weight by:
    ``finding`` of `ope.data.overlap` on the whole log)."""
    if not finding.deterministic:
        return cfg
    dropped = [e for e in cfg.evaluation.estimators if e != "DM"]
    notes.append(f"{finding.message} Importance-weighted estimators ({', '.join(dropped) or 'none'}) were not computed; "
                 "DM's numbers are only as good as the outcome models.")
    return dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, estimators=("DM",)))


def blank_metric(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """The frame with every number of ``metric`` set to NaN (a metric the log cannot speak to)."""
    if "metric" not in frame.columns or frame.height == 0:
        return frame
    numbers = [c for c in ("value", "stderr", "ci_low", "ci_high") if c in frame.columns]
    return frame.with_columns(pl.when(pl.col("metric") == metric).then(float("nan")).otherwise(pl.col(c)).alias(c) for c in numbers)


def _replay_rows(name: str, online: OnlinePolicy, fb: BanditFeedback, dataset: BanditDataset, alpha: float,
                 notes: list[str]) -> list[dict[str, Any]]:
    """Replay (rejection sampling) of a router that learns online, in arrival order: value rows and a note."""
    replay = Replay(alpha=alpha)
    try:
        result = replay.estimate(fb.subset(time_order(dataset)), online)
    except EstimatorInputError as exc:
        notes.append(f"{name}: Replay could not evaluate it as an online learner ({exc}) The other estimators score its "
                     "rollout on predicted outcomes.")
        return []
    scale = float(1.0 / fb.propensities.min())
    notes.append(f"{name}: Replay, which lets it learn online from the rows it is shown, accepted {result.n_accepted:,} of "
                 f"{result.n:,} rows (rejection sampling with M = {scale:.0f}); the other estimators score its rollout on predicted "
                 "outcomes." + (f" {result.n_overflow} rows exceeded M and bias Replay toward the logger." if result.n_overflow else ""))
    return [{"policy": name, "metric": m, "estimator": "Replay", "kind": "value", "value": float(result.value[j]),
             "stderr": float(result.stderr[j]), "ci_low": float(result.ci_low[j]), "ci_high": float(result.ci_high[j]),
             "n": float(result.n_accepted), "ess": float(result.n_accepted)} for j, m in enumerate(METRICS)]


def run_experiment(cfg: ExperimentConfig, *, show_progress: bool = True) -> RunResult:
    """Load, fit the policies, evaluate every policy with every estimator, and compare to the baseline.

    With ``[data] streaming``, or a parquet log too large for ``[data] memory_budget_mb``, the log is
    read in batches (`ope.evaluation.engines.local.run_streaming`); with ``[data] engine = "ray"`` the batches are
    evaluated on a Ray cluster (`ope.evaluation.engines.ray`).
    """
    from ope.evaluation.engines.local import run_streaming, streaming_wanted

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    estimators = build_estimators(cfg)
    inference = build_inference(cfg)
    policies = {p.name: build_policy(p) for p in cfg.policies}
    if cfg.evaluation.baseline not in policies:
        msg = f"{cfg.source}: baseline '{cfg.evaluation.baseline}' is not among the policies {list(policies)}."
        raise ConfigError(msg)
    if cfg.data.engine == "ray":
        from ope.evaluation.engines.ray import run_on_ray

        return run_on_ray(cfg, address=cfg.data.ray_address, show_progress=show_progress)
    if streaming_wanted(cfg):
        return run_streaming(cfg, show_progress=show_progress)
    dataset, fb, propensity_model, notes = load_for_run(cfg, show_progress=show_progress)
    if propensity_model is not None:  # logged propensities are the logger's own word; estimated ones need overlap
        cfg = model_based_only(cfg, detect_deterministic_router(dataset.logs, dataset.eligible), notes)
        estimators = build_estimators(cfg)
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
    shared = Shared.of(fb, q_hat)  # q̂ checked once, each policy prepared once
    prepared = {name: shared.policy(pi) for name, pi in probabilities.items()}
    rows: list[dict[str, Any]] = []
    diagnostics: dict[str, dict[str, Any]] = {}
    alpha = cfg.evaluation.alpha
    with warnings.catch_warnings(), progress("estimating", total=len(policies) * len(estimators), enabled=show_progress) as bar:
        warnings.simplefilter("ignore", SupportWarning)  # they are kept in the diagnostics and the report
        for name, prep in prepared.items():
            paired = name != cfg.evaluation.baseline
            batch = shared.batch(prep, prepared[cfg.evaluation.baseline] if paired else None)
            for est in estimators:
                kinds = ("value", "difference", "relative") if paired else ("value",)
                try:
                    part = est.accumulate(batch, n_boot=inference.n_boot, seed=inference.seed)
                    value = est.finalize(part, inference=inference, alpha=alpha, kind="value")
                    done = {kind: value if kind == "value" else est.finalize(part, inference=inference, alpha=alpha, kind=kind)
                            for kind in kinds}
                except EstimatorInputError as exc:  # e.g. a policy that never overlaps the log: say so, keep the rest
                    notes.append(f"{name}: {est.name} cannot estimate it on this log ({exc}).")
                    rows += [missing_row(name, m, est.name, kind) for kind in kinds for m in METRICS]
                    bar.update(1)
                    continue
                diagnostics.setdefault(name, {})[est.name] = value.diagnostics.to_dict()
                rows += [r for kind, e in done.items() for r in estimate_rows(name, e, kind)]
                bar.update(1)
            online = getattr(policies[name], "online", None)
            if online is not None:
                rows += _replay_rows(name, online(dataset, q_hat), fb, dataset, alpha, notes)
    estimates = pl.DataFrame(rows, schema={c: (pl.String if c in ("policy", "metric", "estimator", "kind") else pl.Float64) for c in ESTIMATE_COLUMNS})
    headline = next(e for e in estimators if e.name == primary_estimator([e.name for e in estimators]))
    slices = time_slices(fb, dataset, probabilities, headline, q_hat, cfg.evaluation.time_slice, alpha)
    groups = breakdowns(fb, dataset, probabilities, headline, q_hat, alpha)
    if not dataset.has_satisfaction_feedback():
        notes.append("NO SATISFACTION FEEDBACK: no successful request in the log has a satisfaction value, so satisfaction "
                     "cannot be estimated and is shown as missing (failed requests alone would make it look like 0).")
        estimates, slices, groups = (blank_metric(f, "satisfaction") for f in (estimates, slices, groups))
    timings["estimate"] = time.perf_counter() - t0 - sum(timings.values())
    return RunResult(cfg, dataset, policies, probabilities, estimates, diagnostics, slices, groups,
                     provider_shares(dataset, probabilities), tuple(notes), timings, outcome_models, propensity_model)
