"""Experiment configs: TOML files loaded into frozen dataclasses that reject unknown keys."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import polars as pl

from ope.errors import ConfigError
from ope.models.predictors import PredictorConfig

__all__ = [
    "DataConfig",
    "EvaluationConfig",
    "PolicyConfig",
    "TrackingConfig",
    "OutputConfig",
    "TuneConfig",
    "ExperimentConfig",
    "load_config",
    "to_toml",
    "BUNDLED",
    "DEFAULT_CONFIG",
]

#: the quickstart and tune configs with the sample they run on, installed with the package (relative paths in the
#: configs resolve against this folder, which mirrors the repository's configs/ and logs/)
BUNDLED = Path(str(files("ope").joinpath("bundled")))
DEFAULT_CONFIG = BUNDLED / "configs" / "quickstart.toml"
DEFAULT_TUNE_CONFIG = BUNDLED / "configs" / "tune.toml"
#: constrained-router settings `ope tune` can sweep
TUNABLE = ("max_cost_usd", "min_sla_hit", "min_satisfaction", "exploration", "max_p95_latency_ms", "max_p95_ttft_ms")


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConfig:
    """Where the logs and the catalog are; optional file for quarantined rows; how a large log is streamed.

    ``logs`` is a file, a directory of parquet files or a glob. With ``streaming`` (or when the
    in-memory run is estimated to need more than ``memory_budget_mb``) the log is read in batches of
    ``batch_rows`` rows and the outcome models and learning policies train on a uniform sample of at
    most ``max_train_rows`` rows (`ope.evaluation.engines.local`; docs/large_logs.md). ``engine`` picks where
    batches run: "auto" (in memory, or streamed as above), "memory" (the whole log as one batch), "local"
    (streamed on this machine) or "ray" (streamed, evaluated on a Ray cluster: ``ray_address``, default a
    local one; `ope.evaluation.engines.ray`).
    """

    logs: Path
    catalog: Path
    quarantine: Path | None = None
    streaming: bool = False
    memory_budget_mb: float = 4096.0
    batch_rows: int = 50_000
    max_train_rows: int = 100_000
    engine: str = "auto"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ("auto", "memory", "local", "ray"):
            raise ValueError(f"[data] engine must be 'auto', 'memory', 'local' or 'ray'. Got {self.engine!r}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationConfig:
    """Which estimators, at which level, against which baseline policy."""

    baseline: str = "direct_official"
    estimators: tuple[str, ...] = ("IPS", "SNIPS")
    alpha: float = 0.05
    sla_latency_ms: float = 10_000.0
    inference: str = "arm-pooled"
    bootstrap_replicates: int = 1000
    time_slice: str = "1d"
    headline: str = "auto"  # "auto": chosen per metric from the data (SLOPE); or an estimator's name
    distributions: bool = True  # CDFs and quantiles of TTFT, latency, cost and throughput (`ope.evaluation.distributions`)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """One policy: a name, a kind, and the kind's own settings (checked by the policy factory)."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackingConfig:
    """MLflow tracking; ``uri`` None means MLflow's own default (a local SQLite store)."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "llm-ope"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputConfig:
    """Where reports go; ``run_name`` defaults to the config name and a timestamp. ``actions``: whose action files
    (``actions/<policy>.parquet``) a run writes — "all", "none" or a list of policy names (large runs save the time)."""

    dir: Path = Path("reports")
    run_name: str | None = None
    actions: str | list[str] = "all"

    def written(self, names: list[str]) -> list[str]:
        """The policies of ``names`` whose action files are written."""
        if self.actions == "all":
            return list(names)
        if self.actions == "none":
            return []
        return [n for n in names if n in self.actions]


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneConfig:
    """`ope tune`: sweep a constrained policy's settings and judge each against rollout targets.

    ``grid`` maps settings of `TUNABLE` to the values tried (every combination). Models and
    routers learn from the first ``train_fraction`` of the log's time span and are judged on the
    rest. A setting is safe when the lower confidence bound of SLA hit rate and satisfaction (the
    upper bound of cost) meets the targets given here; with ``simultaneous`` the bounds are
    Bonferroni-adjusted over every setting and target, so the recommendation survives the search.
    """

    policy: str | None = None
    grid: dict[str, list[float]] = field(default_factory=dict)
    train_fraction: float = 0.6
    min_sla_hit: float | None = None
    min_satisfaction: float | None = None
    max_cost_usd: float | None = None
    simultaneous: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    """A whole `ope run`: data, evaluation, policies, tracking, output; ``source`` is the file."""

    data: DataConfig
    evaluation: EvaluationConfig
    policies: tuple[PolicyConfig, ...]
    tracking: TrackingConfig
    output: OutputConfig
    source: Path
    predictors: PredictorConfig = field(default_factory=PredictorConfig)
    tune: TuneConfig | None = None
    text: str = field(repr=False, default="")

    @property
    def sections(self) -> tuple[str, ...]:
        """The table sections this config has, in file order."""
        return ("data", "evaluation", "predictors", "tracking", "output") + (("tune",) if self.tune else ())

    def flat(self) -> dict[str, str]:
        """The config flattened to dotted keys, for MLflow params."""
        out: dict[str, str] = {}
        for section in self.sections:
            for f in fields(getattr(self, section)):
                out[f"{section}.{f.name}"] = str(getattr(getattr(self, section), f.name))
        for p in self.policies:
            out[f"policies.{p.name}.kind"] = p.kind
            for k, v in p.params.items():
                out[f"policies.{p.name}.{k}"] = str(v)
        return out


_TYPES: dict[str, type | tuple[type, ...]] = {
    "logs": str, "catalog": str, "quarantine": str, "streaming": bool, "memory_budget_mb": (int, float), "batch_rows": int,
    "max_train_rows": int, "engine": str, "ray_address": str, "baseline": str, "estimators": list, "alpha": (int, float),
    "sla_latency_ms": (int, float), "inference": str, "bootstrap_replicates": int, "time_slice": str, "headline": str,
    "distributions": bool,
    "enabled": bool, "uri": str, "experiment": str, "dir": str, "run_name": str, "actions": (str, list),
    "folds": int, "time_blocked": bool, "n_estimators": int, "learning_rate": (int, float), "num_leaves": int,
    "min_child_samples": int, "history_hours": (int, float), "threads": int, "predict_threads": int, "compiled": str, "seed": int,
    "propensity_leaves": int, "propensity_min_child_samples": int, "propensity_learning_rate": (int, float),
    "propensity_n_estimators": int, "policy": str, "grid": dict, "train_fraction": (int, float),
    "min_sla_hit": (int, float), "min_satisfaction": (int, float), "max_cost_usd": (int, float), "simultaneous": bool,
}
_PATHS = {"logs", "catalog", "quarantine", "dir"}


def _section(cls: type, raw: dict[str, Any], name: str, source: Path, base: Path) -> Any:
    known = {f.name for f in fields(cls)}
    for key, value in raw.items():
        if key not in known:
            msg = f"{source}: unknown key '{key}' in [{name}] (known keys: {', '.join(sorted(known))})."
            raise ConfigError(msg)
        want = _TYPES[key]
        if not isinstance(value, want) or (isinstance(value, bool) and want is not bool):
            msg = f"{source}: [{name}] {key} has the wrong type: got {type(value).__name__} {value!r}."
            raise ConfigError(msg)
    values = {k: (base / v if k in _PATHS and not Path(v).is_absolute() else Path(v) if k in _PATHS else v)
              for k, v in raw.items()}
    if "estimators" in values:
        values["estimators"] = tuple(values["estimators"])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: [{name}] is incomplete: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if value == value and abs(value) != float("inf") else f'"{value}"'
    if isinstance(value, Path):
        value = str(value.resolve())
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):   # keys that are not bare TOML keys (an arm "together/qwen3-32b") are quoted
        return "{ " + ", ".join(f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else _toml_value(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(cfg: ExperimentConfig) -> str:
    """The config as actually used (command-line overrides applied, paths absolute), as TOML."""
    lines = [f"# resolved from {cfg.source}"]
    for section in cfg.sections:
        lines.append(f"\n[{section}]")
        for f in fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            if value is not None:
                lines.append(f"{f.name} = {_toml_value(value)}")
    for p in cfg.policies:
        lines += ["\n[[policies]]", f"name = {_toml_value(p.name)}", f"kind = {_toml_value(p.kind)}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in p.params.items()]
    return "\n".join(lines) + "\n"


def _check_actions(actions: str | list[str], names: list[str], source: Path) -> None:
    """[output] actions is "all", "none" or a list of the config's policy names."""
    if isinstance(actions, str):
        if actions not in ("all", "none"):
            raise ConfigError(f"{source}: [output] actions must be 'all', 'none' or a list of policy names. Got {actions!r}.")
        return
    unknown = [a for a in actions if a not in names]
    if unknown:
        raise ConfigError(f"{source}: [output] actions names unknown policies {unknown} (policies: {names}).")


def _check_evaluation(ev: EvaluationConfig, source: Path) -> None:
    """Value rules of [evaluation] that types alone do not catch."""
    if not 0 < ev.alpha < 1:
        raise ConfigError(f"{source}: [evaluation] alpha must be in (0, 1). Got {ev.alpha}.")
    if not ev.sla_latency_ms > 0:
        raise ConfigError(f"{source}: [evaluation] sla_latency_ms must be > 0. Got {ev.sla_latency_ms}.")
    if not ev.estimators or not all(isinstance(e, str) for e in ev.estimators):
        raise ConfigError(f"{source}: [evaluation] estimators must be a non-empty list of names, e.g. [\"IPS\", \"SNIPS\"].")
    if ev.headline != "auto" and ev.headline not in ev.estimators:
        raise ConfigError(f"{source}: [evaluation] headline must be \"auto\" or one of the estimators {list(ev.estimators)}. Got {ev.headline!r}.")
    try:
        pl.Series([datetime(2025, 1, 1)]).dt.truncate(ev.time_slice)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        msg = f"{source}: [evaluation] time_slice must be a polars duration such as \"1h\" or \"1d\". Got {ev.time_slice!r}."
        raise ConfigError(msg) from exc


def _check_tune(tune: TuneConfig, policies: tuple[PolicyConfig, ...], source: Path) -> TuneConfig:
    """Value rules of [tune]; fills in the policy when the config has exactly one constrained policy."""
    constrained = [p.name for p in policies if p.kind == "constrained"]
    policy = tune.policy
    if policy is None:
        if len(constrained) != 1:
            raise ConfigError(f"{source}: [tune] policy must name the constrained policy to sweep (constrained policies: {constrained}).")
        policy = constrained[0]
    elif policy not in constrained:
        raise ConfigError(f"{source}: [tune] policy '{policy}' is not a constrained policy of this config ({constrained}).")
    if not tune.grid:
        raise ConfigError(f"{source}: [tune.grid] is empty; give at least one setting and its values, e.g. min_sla_hit = [0.5, 0.6].")
    for key, values in tune.grid.items():
        if key not in TUNABLE:
            raise ConfigError(f"{source}: [tune.grid] cannot sweep '{key}' (sweepable: {', '.join(TUNABLE)}).")
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values)):
            raise ConfigError(f"{source}: [tune.grid] {key} must be a non-empty list of numbers >= 0. Got {values!r}.")
    if not 0.1 <= tune.train_fraction <= 0.9:
        raise ConfigError(f"{source}: [tune] train_fraction must be in [0.1, 0.9]. Got {tune.train_fraction}.")
    if tune.min_sla_hit is None and tune.min_satisfaction is None and tune.max_cost_usd is None:
        raise ConfigError(f"{source}: [tune] needs at least one rollout target: min_sla_hit, min_satisfaction or max_cost_usd.")
    return TuneConfig(**{**{f.name: getattr(tune, f.name) for f in fields(tune)}, "policy": policy})


def load_config(path: str | Path, *, base: Path | None = None) -> ExperimentConfig:
    """Read a TOML config. Relative paths resolve against ``base`` (default: current directory)."""
    source = Path(path)
    try:
        text = source.read_text()
        raw = tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"Config file not found: {source}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    base = Path.cwd() if base is None else base
    allowed = {"data", "evaluation", "predictors", "policies", "tracking", "output", "tune"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown section '{key}' (known: {', '.join(sorted(allowed))}).")
    if "data" not in raw:
        raise ConfigError(f"{source}: the [data] section with 'logs' and 'catalog' is required.")
    evaluation = _section(EvaluationConfig, raw.get("evaluation", {}), "evaluation", source, base)
    _check_evaluation(evaluation, source)
    entries = raw.get("policies", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{source}: policies must be an array of tables, written [[policies]] (one per policy).")
    if not entries:
        raise ConfigError(f"{source}: no [[policies]] given; at least the baseline policy is needed.")
    policies = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        name, kind = entry.pop("name", None), entry.pop("kind", None)
        if not isinstance(name, str) or not isinstance(kind, str):
            raise ConfigError(f"{source}: [[policies]] entry {i + 1} needs string 'name' and 'kind'.")
        policies.append(PolicyConfig(name=name, kind=kind, params=entry))
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: policy names must be unique. Got {names}.")
    output = _section(OutputConfig, raw.get("output", {}), "output", source, base)
    _check_actions(output.actions, names, source)
    return ExperimentConfig(
        data=_section(DataConfig, raw["data"], "data", source, base),
        evaluation=evaluation,
        policies=tuple(policies),
        tracking=_section(TrackingConfig, raw.get("tracking", {}), "tracking", source, base),
        predictors=_section(PredictorConfig, raw.get("predictors", {}), "predictors", source, base),
        output=output,
        tune=None if "tune" not in raw else _check_tune(_section(TuneConfig, raw["tune"], "tune", source, base), tuple(policies), source),
        source=source,
        text=text,
    )
