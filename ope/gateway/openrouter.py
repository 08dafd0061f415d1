"""OpenRouter provider preferences per (model, task): an ``order``, or a kept set load-balanced by price.

OpenRouter can be told, per request, to try providers in a fixed ``order`` (the first available
serves it) or to load-balance ∝ 1/price² (its default) over the providers not in ``ignore``. It
cannot be given weights. For each group the export keeps the preference whose implied
probabilities are closest to the policy's on the group's logged requests (mean total-variation
distance): the order of the arms by the policy's mean weight, or price balancing over its top k
arms for any k.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.data.dataset import BanditDataset
from policies.exported import ANY, ProviderPreferences, group_keys

__all__ = ["choose_preferences", "openrouter_document"]

FloatArray = npt.NDArray[np.float64]


def _distance(pref: dict[str, list[str]], ds: BanditDataset, target: FloatArray) -> float:
    """Mean (sample-weighted) total-variation distance between a preference's probabilities and ``target`` (n, K)."""
    pi = ProviderPreferences(preferences={"*|*": pref}).action_probabilities(_as_group(ds))
    tv = 0.5 * np.abs(pi - target).sum(axis=1)
    return float(np.average(tv, weights=ds.sample_weight))


def _as_group(ds: BanditDataset) -> BanditDataset:
    """The rows relabelled into one group (``*|*``) so one preference applies to all of them."""
    return dataclasses.replace(ds, logs=ds.logs.with_columns(pl.lit("*").alias("model"), pl.lit("*").alias("task")))


def _best(ds: BanditDataset, target: FloatArray) -> dict[str, list[str]]:
    """The candidate preference closest to ``target`` on these rows (ties: the simpler, an order first)."""
    mean = np.average(target, axis=0, weights=ds.sample_weight)
    ranked = [ds.arms[k] for k in np.argsort(-mean, kind="stable") if mean[k] > 0]
    candidates = [{"order": ranked}] + [{"balance": ranked[:k]} for k in range(1, len(ranked) + 1)]
    distances = [_distance(c, ds, target) for c in candidates]
    return candidates[int(np.argmin(np.round(distances, 12)))]


def choose_preferences(ds: BanditDataset, target: FloatArray) -> dict[str, dict[str, list[str]]]:
    """The preference of every (model, task) group and each model's default (``<model>|*``), fitted to ``target`` (n, K),
    the policy's probabilities on the logged requests ``ds``."""
    keys = group_keys(ds.requests).to_numpy()
    models = ds.requests["model"].cast(pl.String).to_numpy()
    out = {}
    for key in sorted(set(keys)) + sorted(f"{m}|{ANY}" for m in set(models)):
        model, task = key.split("|")
        rows = (keys == key) if task != ANY else (models == model)
        out[key] = _best(ds.subset(rows), target[rows])
    return out


def openrouter_document(policy: ProviderPreferences, arms: pl.DataFrame, prices: pl.DataFrame) -> dict[str, Any]:
    """The ``openrouter`` export: the ``provider`` object of the request body for each (model, task).

    ``arms`` are the catalog's arms (``arm, provider, model``), ``prices`` its price snapshots. An
    ``order`` lists the providers by the policy's weight with ``allow_fallbacks`` false (only they may
    serve); a balanced set ``ignore`` s the model's other providers, with ``max_price`` the highest
    price the kept ones charged in the catalog (USD per million tokens).
    """
    provider = dict(zip(arms["arm"].to_list(), arms["provider"].to_list(), strict=True))
    by_model = arms.group_by("model").agg(pl.col("arm")).rows()
    model_arms = {m: sorted(a) for m, a in by_model}
    top = prices.group_by("arm").agg(pl.col("price_in_per_mtok").max(), pl.col("price_out_per_mtok").max())
    price = {a: (i, o) for a, i, o in top.select("arm", "price_in_per_mtok", "price_out_per_mtok").iter_rows()}
    groups = []
    for key, pref in policy.preferences.items():
        model, task = key.split("|")
        rule, kept = next(iter(pref.items()))
        if rule == "order":
            body: dict[str, Any] = {"order": [provider[a] for a in kept], "allow_fallbacks": False}
        else:
            body = {"ignore": sorted(provider[a] for a in model_arms.get(model, []) if a not in kept),
                    "max_price": {"prompt": max(price[a][0] for a in kept), "completion": max(price[a][1] for a in kept)},
                    "allow_fallbacks": True}
        groups.append({"model": model, "task": task, "provider": body})
    return {"format": "openrouter-provider-preferences", "version": 1,
            "rule": "send each request with the 'provider' object of its (model, task); task '*' for a task not listed. "
                    "Provider names are the catalog's: map them to OpenRouter's provider slugs where they differ.",
            "groups": groups}
