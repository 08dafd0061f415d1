"""Policies by config kind: build one from a `PolicyConfig`, accepting exactly the settings its class declares."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from ope.config import PolicyConfig
from ope.errors import ConfigError
from policies import Mixture, Policy
from policies.base import settings_of

__all__ = ["KINDS", "build_policies", "build_policy", "policy_class", "policy_config"]

#: kind → "module:class" (imported when a config asks for it: the constrained router needs cvxpy, about a second to import)
KINDS: dict[str, str] = {
    "constrained": "policies.constrained:ConstrainedRouter",
    "mess_plus": "policies.mess_plus:MessPlus",
    "stage_route": "policies.stage_route:StageRoute",
    "direct_official": "policies.baselines:DirectOfficial",
    "cheapest": "policies.baselines:Cheapest",
    "fastest": "policies.baselines:Fastest",
    "price_weighted": "policies.baselines:PriceWeighted",
    "uniform": "policies.baselines:Uniform",
    "group_weights": "policies.exported:GroupWeights",              # what `ope export` writes: fixed weights per group
    "provider_preferences": "policies.exported:ProviderPreferences",  # OpenRouter order / price balancing per group
}

#: kinds that explore on their own terms, so an ε-mixture would change what they are
NO_EPSILON = {"constrained": "use 'exploration', not 'epsilon'.",
              "mess_plus": "it explores by its own schedule p_t = min(1, c / t^(1/5)); set 'c', not 'epsilon'.",
              "stage_route": "it explores by optimism (its confidence bounds); set 'confidence', not 'epsilon'."}


def policy_class(kind: str) -> type:
    """The class of a policy kind."""
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def build_policy(cfg: PolicyConfig) -> Policy:
    """The policy a config entry describes; ``epsilon`` mixes any kind with uniform exploration."""
    if cfg.kind not in KINDS:
        msg = f"Policy '{cfg.name}': unknown kind '{cfg.kind}' (known kinds: {', '.join(sorted(KINDS))})."
        raise ConfigError(msg)
    cls = policy_class(cfg.kind)
    allowed = set(settings_of(cls)) - {"name"}
    params: dict[str, Any] = dict(cfg.params)
    epsilon = params.pop("epsilon", None)
    if epsilon is not None and cfg.kind in NO_EPSILON:
        raise ConfigError(f"Policy '{cfg.name}' (kind {cfg.kind}): {NO_EPSILON[cfg.kind]}")
    unknown = set(params) - allowed
    if unknown:
        msg = f"Policy '{cfg.name}' (kind {cfg.kind}): unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed | {'epsilon'})}."
        raise ConfigError(msg)
    try:
        policy = cls(name=cfg.name, **params)
        if epsilon is not None:
            policy = Mixture(policy=policy, epsilon=float(epsilon), name=cfg.name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Policy '{cfg.name}': {exc}") from exc
    return policy  # type: ignore[no-any-return]


def build_policies(policies: tuple[PolicyConfig, ...], baseline: str, source: object) -> dict[str, Policy]:
    """Every policy of a config by name, checking that the baseline is one of them."""
    out = {p.name: build_policy(p) for p in policies}
    if baseline not in out:
        raise ConfigError(f"{source}: baseline '{baseline}' is not among the policies {list(out)}.")
    return out


def policy_config(name: str, policy: Policy) -> PolicyConfig:
    """The config entry of a policy object (``ope.evaluate``), so the run's config says what was evaluated.

    A class that is no config kind is recorded by its import path; such an entry documents the run but
    cannot be built from a config file.
    """
    inner, params = policy, {}
    if isinstance(policy, Mixture):
        inner, params = policy.policy, {"epsilon": policy.epsilon}
    path = f"{type(inner).__module__}:{type(inner).__qualname__}"
    kind = next((k for k, v in KINDS.items() if v == path), path)
    settings = {k: getattr(inner, k) for k in settings_of(type(inner)) if k != "name"} if dataclasses.is_dataclass(inner) else {}
    return PolicyConfig(name=name, kind=kind, params={**settings, **params})

