"""A LiteLLM proxy router config: one deployment per (arm, task tag) with its weight, ``simple-shuffle``, tag filtering.

LiteLLM routes a request to a deployment of the model group it names (``model_name``); with
``enable_tag_filtering`` only deployments carrying one of the request's tags compete (untagged
requests, and tags no deployment has: those tagged ``default``), and ``simple-shuffle`` picks among
them with probability ∝ ``weight``; ``enable_pre_call_checks`` skips deployments whose
``max_input_tokens`` the prompt exceeds. The export uses the tag ``task:<task>`` (the tag the LiteLLM
importer reads a request's task from) and a ``default`` deployment set per model with the weights
averaged over all its tasks. The same file is a ``--router-config`` for ``ope import litellm``
(`read_deployments`), which reconstructs the propensities it implies.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ope.errors import ConfigError
from policies.exported import ANY, GroupWeights

__all__ = ["DEFAULT_TAG", "TASK_TAG", "litellm_config", "read_deployments"]

TASK_TAG = "task:"
DEFAULT_TAG = "default"


def litellm_config(policy: GroupWeights, arms: pl.DataFrame) -> dict[str, Any]:
    """The router config (``model_list``, ``router_settings``) of a (model, task) `GroupWeights`; ``arms`` the catalog's arms."""
    if policy.length_edges:
        raise ConfigError("LiteLLM cannot route on input length: export (model, task) weights, without length buckets.")
    context = dict(zip(arms["arm"].to_list(), arms["context_tokens"].to_list(), strict=True))
    model_list = []
    for key, weights in policy.weights.items():
        model, task = key.split("|")
        tag = DEFAULT_TAG if task == ANY else f"{TASK_TAG}{task}"
        for arm, weight in weights.items():
            model_list.append({
                "model_name": model,
                "litellm_params": {"model": arm, "weight": weight, "tags": [tag]},
                "model_info": {"id": f"{arm}#{tag}", "llm_ope_arm": arm, "max_input_tokens": int(context[arm])},
            })
    return {"model_list": model_list,
            "router_settings": {"routing_strategy": "simple-shuffle", "enable_tag_filtering": True, "enable_pre_call_checks": True}}


def read_deployments(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The [router] settings (`ope.importers.router_config`) a LiteLLM config implies: strategy, deployments, tag filtering.

    A deployment's arm is its ``model_info.llm_ope_arm`` when present (configs ``ope export`` wrote),
    else its ``litellm_params.model`` (``provider/model``, as in the catalog).
    """
    settings = raw.get("router_settings") or {}
    if not isinstance(raw.get("model_list"), list) or not isinstance(settings, dict):
        raise ConfigError(f"{source}: a LiteLLM config needs a model_list (a list of deployments) and router_settings a mapping.")
    deployments = []
    for i, entry in enumerate(raw["model_list"]):
        params, info = (entry or {}).get("litellm_params") or {}, (entry or {}).get("model_info") or {}
        arm = info.get("llm_ope_arm") or params.get("model")
        if not isinstance(arm, str):
            raise ConfigError(f"{source}: model_list entry {i + 1} has no litellm_params.model (provider/model).")
        tags = params.get("tags") or []
        deployments.append({"arm": arm, "weight": params.get("weight"), "rpm": params.get("rpm"), "tpm": params.get("tpm"),
                            "tags": [str(t) for t in (tags if isinstance(tags, list) else [tags])]})
    strategy = settings.get("routing_strategy", "simple-shuffle")   # LiteLLM's default; the others are not randomised
    return {"strategy": "simple-shuffle" if strategy == "simple-shuffle" else "unknown", "deployments": deployments,
            "tag_filtering": bool(settings.get("enable_tag_filtering", False))}
