"""The router-config file and propensity reconstruction from it.

Gateway logs almost never carry the logging policy's probability of the arm they served. When the
router was randomised and its configuration is known, that probability can be recomputed:

- LiteLLM ``simple-shuffle`` picks a deployment of the model group at random, weighted by the
  deployments' ``weight``, else ``rpm``, else ``tpm``, else uniformly, among healthy deployments
  (LiteLLM's documented order). Several deployments on one arm add up.
- OpenRouter's documented default load-balances among the *stable* providers with probability
  proportional to 1 / price² (price in force at the request, from the catalog).

Anything else (``sort``, ``order``, latency- or cost-based routing) is deterministic or unknown:
propensities stay null. The file is TOML or JSON; docs/importers.md describes every key. A LiteLLM
proxy config (YAML or JSON with a ``model_list``, as ``ope export --format litellm`` writes) is read
as such (`ope.gateway.litellm.read_deployments`): with ``enable_tag_filtering`` a request competes
only among the deployments tagged with its task (``task:<task>``), else those tagged ``default``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import yaml

from ope.data.catalog import Catalog
from ope.errors import ConfigError
from ope.gateway.litellm import DEFAULT_TAG, TASK_TAG, read_deployments
from ope.text import count as plural

__all__ = [
    "STRATEGIES",
    "BurstGPTSettings",
    "Cooldown",
    "Deployment",
    "RouterConfig",
    "load_router_config",
    "reconstruct_propensities",
]

STRATEGIES = ("simple-shuffle", "openrouter-default", "deterministic", "unknown")
FloatArray = npt.NDArray[np.float64]
_MIN_PRICE = 1e-6


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    """One LiteLLM deployment: the arm it serves and its load-balancing settings."""

    arm: str
    weight: float | None = None
    rpm: float | None = None
    tpm: float | None = None
    healthy: bool = True
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Cooldown:
    """An arm out of rotation (cooled down, unhealthy) from ``start`` to ``end`` (UTC, microseconds)."""

    arm: str
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstGPTSettings:
    """What the BurstGPT trace does not say: its start time, the arm per model, assumed timings."""

    start: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    arms: dict[str, str] = field(default_factory=dict)
    assumed_ttft_ms: float = 500.0
    assumed_tokens_per_s: float = 50.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig:
    """How the logging router chose arms, plus name aliases; ``source`` is the file."""

    strategy: str = "unknown"
    deployments: tuple[Deployment, ...] = ()
    cooldowns: tuple[Cooldown, ...] = ()
    stable_providers: tuple[str, ...] | None = None
    price: str = "blended"
    exponent: float = 2.0
    provider_aliases: dict[str, str] = field(default_factory=dict)
    model_aliases: dict[str, str] = field(default_factory=dict)
    burstgpt: BurstGPTSettings = field(default_factory=BurstGPTSettings)
    source: str = "<defaults>"
    tag_filtering: bool = False

    @property
    def randomised(self) -> bool:
        """True when propensities can be recomputed from this configuration."""
        return self.strategy in ("simple-shuffle", "openrouter-default")


_SECTIONS = {
    "router": {"strategy", "deployments", "cooldowns", "stable_providers", "price", "exponent", "sort", "order", "tag_filtering"},
    "aliases": {"providers", "models"},
    "burstgpt": {"start", "arms", "assumed_ttft_ms", "assumed_tokens_per_s"},
}
_DEPLOYMENT_KEYS = {"arm", "weight", "rpm", "tpm", "healthy", "tags"}
_COOLDOWN_KEYS = {"arm", "start", "end"}


def _check_keys(raw: dict[str, Any], known: set[str], where: str, source: str) -> None:
    for key in raw:
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{key}' in {where} (known keys: {', '.join(sorted(known))}).")


def _time(value: Any, where: str, source: str) -> datetime:
    try:
        ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"{source}: {where} must be an ISO 8601 time. Got {value!r}.") from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _number(raw: dict[str, Any], key: str, where: str, source: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{source}: {where} {key} must be a number >= 0. Got {value!r}.")
    return float(value)


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def _router(raw: dict[str, Any], source: str) -> dict[str, Any]:
    _check_keys(raw, _SECTIONS["router"], "[router]", source)
    strategy = raw.get("strategy", "unknown")
    if raw.get("sort") or raw.get("order"):
        strategy = "deterministic"      # OpenRouter: sort or order disables load balancing
    if strategy not in STRATEGIES:
        raise ConfigError(f"{source}: [router] strategy must be one of {', '.join(STRATEGIES)}. Got {strategy!r}.")
    deployments = []
    for i, dep in enumerate(raw.get("deployments", [])):
        where = f"[[router.deployments]] entry {i + 1}"
        _check_keys(dep, _DEPLOYMENT_KEYS, where, source)
        if not isinstance(dep.get("arm"), str):
            raise ConfigError(f"{source}: {where} needs a string 'arm' (provider/model, as in the catalog).")
        deployments.append(Deployment(arm=dep["arm"], weight=_number(dep, "weight", where, source),
                                      rpm=_number(dep, "rpm", where, source), tpm=_number(dep, "tpm", where, source),
                                      healthy=bool(dep.get("healthy", True)), tags=tuple(str(t) for t in dep.get("tags") or ())))
    cooldowns = []
    for i, cd in enumerate(raw.get("cooldowns", [])):
        where = f"[[router.cooldowns]] entry {i + 1}"
        _check_keys(cd, _COOLDOWN_KEYS, where, source)
        if not isinstance(cd.get("arm"), str) or "start" not in cd or "end" not in cd:
            raise ConfigError(f"{source}: {where} needs 'arm', 'start' and 'end'.")
        cooldowns.append(Cooldown(arm=cd["arm"], start_us=_us(_time(cd["start"], where, source)),
                                  end_us=_us(_time(cd["end"], where, source))))
    price = raw.get("price", "blended")
    if price not in ("blended", "input", "output"):
        raise ConfigError(f"{source}: [router] price must be blended, input or output. Got {price!r}.")
    stable = raw.get("stable_providers")
    if strategy == "simple-shuffle" and not deployments:
        raise ConfigError(f"{source}: strategy simple-shuffle needs [[router.deployments]] (one per deployment).")
    return {"strategy": strategy, "deployments": tuple(deployments), "cooldowns": tuple(cooldowns), "price": price,
            "exponent": _number(raw, "exponent", "[router]", source) or 2.0, "tag_filtering": bool(raw.get("tag_filtering", False)),
            "stable_providers": None if stable is None else tuple(str(s) for s in stable)}


def load_router_config(path: str | Path | None) -> RouterConfig:
    """Read a router-config file (TOML or JSON); None gives the defaults (nothing reconstructed)."""
    if path is None:
        return RouterConfig()
    path = Path(path)
    source = str(path)
    kind = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}.get(path.suffix.lower(), "TOML")
    try:
        text = path.read_text()
        raw = {"JSON": json.loads, "YAML": yaml.safe_load, "TOML": tomllib.loads}[kind](text)
    except FileNotFoundError as exc:
        raise ConfigError(f"Router config file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid {kind}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level.")
    if "model_list" in raw:    # a LiteLLM proxy config
        return RouterConfig(**_router(read_deployments(raw, source), source), source=source)
    _check_keys(raw, set(_SECTIONS), "the top level", source)
    aliases = raw.get("aliases", {})
    _check_keys(aliases, _SECTIONS["aliases"], "[aliases]", source)
    burst = raw.get("burstgpt", {})
    _check_keys(burst, _SECTIONS["burstgpt"], "[burstgpt]", source)
    settings = BurstGPTSettings(
        start=_time(burst.get("start", "1970-01-01T00:00:00+00:00"), "[burstgpt] start", source),
        arms={str(k): str(v) for k, v in burst.get("arms", {}).items()},
        assumed_ttft_ms=_number(burst, "assumed_ttft_ms", "[burstgpt]", source) or 500.0,
        assumed_tokens_per_s=_number(burst, "assumed_tokens_per_s", "[burstgpt]", source) or 50.0,
    )
    return RouterConfig(**_router(raw.get("router", {}), source),
                        provider_aliases={str(k): str(v) for k, v in aliases.get("providers", {}).items()},
                        model_aliases={str(k): str(v) for k, v in aliases.get("models", {}).items()},
                        burstgpt=settings, source=source)


def _check_arms(arms: list[str], catalog: Catalog, source: str, what: str) -> None:
    unknown = sorted(set(arms) - set(catalog.arms))
    if unknown:
        raise ConfigError(f"{source}: {what} name arms not in the catalog: {unknown[:5]}.")


def _shuffle_weights(config: RouterConfig, catalog: Catalog, tasks: pl.Series) -> FloatArray:
    """(n, K) simple-shuffle weight of every arm for each request (deployments of one model group compete with each other;
    with tag filtering, only those tagged with the request's task, else those tagged ``default``)."""
    _check_arms([d.arm for d in config.deployments], catalog, config.source, "[[router.deployments]]")
    models = dict(zip(catalog.arms, catalog.arms_frame["model"].to_list(), strict=True))
    if not config.tag_filtering:
        return np.broadcast_to(_group_weights(config.deployments, models, catalog.arms), (tasks.len(), catalog.n_arms))
    out = np.zeros((tasks.len(), catalog.n_arms))
    values = tasks.cast(pl.String).to_numpy()
    for task in np.unique(values):
        chosen = []
        for model in {models[d.arm] for d in config.deployments}:
            mine = [d for d in config.deployments if models[d.arm] == model]
            tagged = [d for d in mine if f"{TASK_TAG}{task}" in d.tags] or [d for d in mine if DEFAULT_TAG in d.tags]
            chosen += tagged or ([] if any(d.tags for d in mine) else mine)
        out[values == task] = _group_weights(tuple(chosen), models, catalog.arms)
    return out


def _group_weights(deployments: tuple[Deployment, ...], models: dict[str, str], arms: tuple[str, ...]) -> FloatArray:
    """(K,) weight of every arm among ``deployments``: per model group, weight, else rpm, else tpm, else uniform (healthy only)."""
    index = {a: k for k, a in enumerate(arms)}
    weights = np.zeros(len(arms))
    for model in {models[d.arm] for d in deployments}:
        group = [d for d in deployments if models[d.arm] == model and d.healthy]
        for key in ("weight", "rpm", "tpm", None):
            values = [1.0 if key is None else (getattr(d, key) or 0.0) for d in group]
            if sum(values) > 0:
                break
        for d, v in zip(group, values, strict=True):
            weights[index[d.arm]] += v
    return weights


def _price_weights(config: RouterConfig, catalog: Catalog, ts: pl.Series) -> FloatArray:
    """(n, K) 1 / price^exponent of the stable arms at each request time."""
    p_in, p_out = catalog.prices_at(ts)
    price = {"blended": (3.0 * p_in + p_out) / 4.0, "input": p_in, "output": p_out}[config.price]
    weights = np.maximum(price, _MIN_PRICE) ** (-config.exponent)
    if config.stable_providers is not None:
        known = set(catalog.arms_frame["provider"].to_list())
        unknown = sorted(set(config.stable_providers) - known)
        if unknown:
            raise ConfigError(f"{config.source}: [router] stable_providers not in the catalog: {unknown[:5]}.")
        stable = np.isin(catalog.arms_frame["provider"].to_numpy(), list(config.stable_providers))
        weights = weights * stable[None, :]
    return weights


def reconstruct_propensities(logs: pl.DataFrame, catalog: Catalog, config: RouterConfig,
                             *, unknown_rows: npt.NDArray[np.bool_] | None = None) -> tuple[FloatArray, list[str]]:
    """The logging router's probability of each logged arm (NaN where it cannot be known), and notes.

    ``logs`` needs ``ts, model, task, input_tokens, arm`` (and the ``needs_*`` columns if any); the
    candidate set of a request is its catalog-eligible arms with positive weight outside cooldowns.
    ``unknown_rows`` (e.g. requests served after a fallback) get NaN: the served arm was not drawn
    by the randomised rule alone.
    """
    n = logs.height
    if not config.randomised or n == 0:
        return np.full(n, np.nan), []
    eligible = catalog.eligible(logs)
    if config.strategy == "simple-shuffle":
        weights = np.where(eligible, _shuffle_weights(config, catalog, logs["task"]), 0.0)
    else:
        weights = np.where(eligible, _price_weights(config, catalog, logs["ts"]), 0.0)
    ts = logs["ts"].dt.epoch("us").to_numpy()
    _check_arms([c.arm for c in config.cooldowns], catalog, config.source, "[[router.cooldowns]]")
    for cd in config.cooldowns:
        k = catalog.arms.index(cd.arm)
        weights[(ts >= cd.start_us) & (ts < cd.end_us), k] = 0.0
    idx = catalog.arm_index(logs["arm"])
    rows = np.arange(n)
    served = np.where(idx >= 0, weights[rows, np.maximum(idx, 0)], 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where((served > 0) & (total > 0), served / total, np.nan)
    notes = []
    outside = int(((idx >= 0) & (served == 0)).sum())
    if outside:
        notes.append(f"{outside} rows were served by an arm the {config.strategy} configuration gives no weight at "
                     "that time (not configured, unhealthy, cooled down or not stable): their propensity is null.")
    if unknown_rows is not None and unknown_rows.any():
        p = np.where(unknown_rows, np.nan, p)
        notes.append(f"{plural(int(unknown_rows.sum()), 'row')} served after a fallback: their propensity is null.")
    return p, notes
