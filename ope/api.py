"""`ope.evaluate`: a run from Python — the CLI's numbers, without writing a TOML file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ope.config import (
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    OutputConfig,
    TrackingConfig,
    _check_evaluation,
    load_config,
)
from ope.errors import ConfigError
from ope.evaluation.registry import policy_config
from ope.evaluation.run import RunResult, run_experiment
from ope.models.predictors import PredictorConfig
from policies import Policy

__all__ = ["evaluate"]

_EVALUATION = EvaluationConfig()


def evaluate(config: ExperimentConfig | str | Path | None = None, *, logs: str | Path | None = None,
             catalog: str | Path | None = None, policies: dict[str, Policy] | None = None, baseline: str | None = None,
             estimators: list[str] | tuple[str, ...] | None = None, alpha: float | None = None, sla_latency_ms: float | None = None,
             inference: str | None = None, bootstrap_replicates: int | None = None, time_slice: str | None = None,
             predictors: PredictorConfig | None = None, quarantine: str | Path | None = None, engine: str | None = None,
             show_progress: bool = False) -> RunResult:
    """Evaluate routing policies on a request log, as ``ope run`` does (nothing is written or tracked).

    Give either a config (a loaded `ExperimentConfig` or a TOML path) or ``logs``, ``catalog`` and
    ``policies`` (policy objects by name, e.g. ``{"cheapest": policies.Cheapest()}``); the other
    keywords override the config, and default to the config's defaults. ``result.estimates`` is the
    table of ``estimates.csv``; ``result.actions.read(name)`` a policy's action probabilities.

    >>> import ope, policies                                                 # doctest: +SKIP
    >>> result = ope.evaluate(logs="logs/sample_requests.parquet", catalog="logs/catalog.csv",
    ...                       policies={"direct_official": policies.DirectOfficial(fallback="cheapest"),
    ...                                 "cheapest": policies.Cheapest(epsilon=0.05)},
    ...                       baseline="direct_official", estimators=["IPS", "SNIPS", "DR"])
    """
    cfg = _base(config, logs, catalog, policies)
    data = {k: Path(v) for k, v in (("logs", logs), ("catalog", catalog), ("quarantine", quarantine)) if v is not None}
    data |= {"engine": engine} if engine is not None else {}
    given = {"baseline": baseline, "estimators": None if estimators is None else tuple(estimators), "alpha": alpha,
             "sla_latency_ms": sla_latency_ms, "inference": inference, "bootstrap_replicates": bootstrap_replicates,
             "time_slice": time_slice}
    evaluation = dataclasses.replace(cfg.evaluation, **{k: v for k, v in given.items() if v is not None})
    _check_evaluation(evaluation, cfg.source)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data), evaluation=evaluation,
                              predictors=cfg.predictors if predictors is None else predictors)
    if policies is not None:
        cfg = dataclasses.replace(cfg, policies=tuple(policy_config(name, p) for name, p in policies.items()))
    return run_experiment(cfg, show_progress=show_progress, policies=policies)


def _base(config: ExperimentConfig | str | Path | None, logs: str | Path | None, catalog: str | Path | None,
          policies: dict[str, Policy] | None) -> ExperimentConfig:
    """The config to start from: the one given, or one made of the keywords."""
    if isinstance(config, ExperimentConfig):
        return config
    if config is not None:
        return load_config(config)
    if logs is None or catalog is None or not policies:
        raise ConfigError("ope.evaluate needs a config, or logs, catalog and policies (a dict of policy objects by name).")
    return ExperimentConfig(data=DataConfig(logs=Path(logs), catalog=Path(catalog)), evaluation=_EVALUATION, policies=(),
                            tracking=TrackingConfig(enabled=False), output=OutputConfig(), source=Path("<ope.evaluate>"))
