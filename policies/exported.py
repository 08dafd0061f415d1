"""What a gateway can express: fixed routing per request group, as exported by ``ope export``.

A gateway routes on little: the model a request asks for, a tag (its task), sometimes its length.
These policies are the probabilities such a gateway config implies, so a run can evaluate "as
deployable" next to "as computed":

- `GroupWeights`: each group — (model, task), or (model, task, input-length bucket) — has fixed
  weights over arms; a request gets its group's weights renormalised over its eligible arms (a
  LiteLLM ``simple-shuffle`` deployment list, tag-filtered, with pre-call context checks).
- `ProviderPreferences`: each group has an OpenRouter provider preference: an ``order`` (the first
  eligible provider listed serves the request) or a kept set load-balanced ∝ 1/price^exponent (the
  others ignored), OpenRouter's default rule.

A request whose group is not listed uses its model's default group (``"<model>|*"``); one whose
group gives no eligible arm any weight is routed uniformly over its eligible arms and counted in
``n_fallback_``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import polars as pl

from policies.base import FloatArray, Pairs, PairwisePolicy, PolicyError
from policies.baselines import blended_price

if TYPE_CHECKING:
    from policies.context import RoutingContext

__all__ = ["GroupWeights", "ProviderPreferences", "bucket_labels", "default_key", "group_keys"]

#: the task of a model's default group (requests of a task no group lists)
ANY = "*"


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """Labels of the input-length buckets cut at ``edges``: ``0-1024``, ``1024-4096``, ..., ``4096+``."""
    bounds = [0, *edges]
    return [f"{lo}-{hi}" for lo, hi in itertools.pairwise(bounds)] + [f"{bounds[-1]}+"]


def group_keys(requests: pl.DataFrame, length_edges: Sequence[int] = ()) -> pl.Series:
    """Each request's group: ``model|task``, or ``model|task|bucket`` with input-length ``length_edges``."""
    key = pl.concat_str([pl.col("model").cast(pl.String), pl.col("task").cast(pl.String)], separator="|")
    if length_edges:
        labels = bucket_labels(length_edges)
        bucket = np.searchsorted(np.asarray(length_edges), requests["input_tokens"].to_numpy(), side="right")
        key = pl.concat_str([key, pl.Series([labels[b] for b in bucket], dtype=pl.String)], separator="|")
    return requests.select(key.alias("group")).to_series()


def default_key(model: str) -> str:
    """The group of a model's requests whose own group is not listed."""
    return f"{model}|{ANY}"


def _check_edges(edges: Sequence[int], who: str) -> tuple[int, ...]:
    out = tuple(int(e) for e in edges)
    if any(e <= 0 for e in out) or list(out) != sorted(set(out)):
        raise PolicyError(f"{who}: length_edges must be increasing positive token counts. Got {list(edges)}.")
    return out


def _group_rows(dataset: RoutingContext, known: dict[str, int], length_edges: Sequence[int]) -> np.ndarray:
    """(n,) index into ``known`` of each request's group, else of its model's default group, else -1."""
    requests = dataset.requests
    own = group_keys(requests, length_edges).replace_strict(known, default=-1, return_dtype=pl.Int64).to_numpy()
    fallback = requests.select(pl.concat_str([pl.col("model").cast(pl.String), pl.lit(f"|{ANY}")])).to_series()
    fallback_index = fallback.replace_strict(known, default=-1, return_dtype=pl.Int64).to_numpy()
    return np.where(own >= 0, own, fallback_index)


def _normalised(pairs: Pairs, weight: FloatArray) -> tuple[FloatArray, int]:
    """Each row's weights over its pairs, normalised; rows with no weight uniform, and how many those were."""
    total = pairs.row_sum(weight)
    empty = total[pairs.rows] <= 0
    pi = np.where(empty, pairs.uniform(empty), weight / np.where(empty, 1.0, total[pairs.rows]))
    return pi, int(np.count_nonzero((total <= 0)[pairs.filled]))


@dataclass(kw_only=True)
class GroupWeights(PairwisePolicy):
    """Fixed weights per request group, renormalised over each request's eligible arms.

    ``weights`` maps a group key (`group_keys`; ``"<model>|*"`` for a model's default) to arm →
    weight ≥ 0; ``length_edges`` cut input tokens into buckets (empty: groups are (model, task));
    ``gateway`` names what the weights stand for (a label for reports).
    """

    name: str = "group_weights"
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    length_edges: tuple[int, ...] = ()
    gateway: str = "json"

    def __post_init__(self) -> None:
        self.length_edges = _check_edges(self.length_edges, f"GroupWeights '{self.name}'")
        bad = [f"{g}: {a}" for g, w in self.weights.items() for a, v in w.items()
               if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v < 0]
        if bad:
            raise PolicyError(f"GroupWeights '{self.name}': weights must be finite numbers >= 0; not so at {bad[:5]}.")

    @property
    def fallback_rule(self) -> str:
        return "uniform over the eligible arms, for requests whose group gives none of their eligible arms a weight"

    def table(self, arms: Sequence[str]) -> tuple[FloatArray, dict[str, int]]:
        """The (G + 1, K) weight of every group and arm in ``arms`` order (last row: zero), and each group's row."""
        index = {a: k for k, a in enumerate(arms)}
        unknown = sorted({a for w in self.weights.values() for a in w} - set(index))
        if unknown:
            raise PolicyError(f"GroupWeights '{self.name}': weights name arms not in the catalog: {unknown[:5]}.")
        out = np.zeros((len(self.weights) + 1, len(arms)))
        for g, w in enumerate(self.weights.values()):
            for arm, value in w.items():
                out[g, index[arm]] = value
        return out, {key: g for g, key in enumerate(self.weights)}

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        table, known = self.table(dataset.arms)
        group = _group_rows(dataset, known, self.length_edges)
        pi, self.n_fallback_ = _normalised(pairs, table[group[pairs.rows], pairs.arms])
        return pi


@dataclass(kw_only=True)
class ProviderPreferences(PairwisePolicy):
    """OpenRouter provider preferences per request group.

    ``preferences`` maps a group key (`group_keys`) to ``{"order": [arm, ...]}`` — the first of them
    eligible for the request serves it — or ``{"balance": [arm, ...]}`` — those arms, load-balanced
    with weight ∝ 1 / blended price^``exponent`` at the request's time (OpenRouter's default over the
    providers not ignored).
    """

    name: str = "provider_preferences"
    preferences: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    exponent: float = 2.0
    gateway: str = "openrouter"
    rules: ClassVar[tuple[str, ...]] = ("order", "balance")

    def __post_init__(self) -> None:
        bad = [g for g, p in self.preferences.items() if len(p) != 1 or next(iter(p)) not in self.rules]
        if bad:
            raise PolicyError(f"ProviderPreferences '{self.name}': each group needs exactly one of 'order' or 'balance'; "
                              f"not so for {bad[:5]}.")

    @property
    def fallback_rule(self) -> str:
        return "uniform over the eligible arms, for requests none of whose preferred providers is eligible"

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        index = {a: k for k, a in enumerate(dataset.arms)}
        rank = np.full((len(self.preferences) + 1, len(index)), np.inf)
        ordered = np.zeros(len(self.preferences) + 1, dtype=bool)
        for g, pref in enumerate(self.preferences.values()):
            rule, arms = next(iter(pref.items()))
            unknown = sorted(set(arms) - set(index))
            if unknown:
                raise PolicyError(f"ProviderPreferences '{self.name}': preferences name arms not in the catalog: {unknown[:5]}.")
            ordered[g] = rule == "order"
            rank[g, [index[a] for a in arms]] = np.arange(len(arms)) if ordered[g] else 0.0
        group = _group_rows(dataset, {k: g for g, k in enumerate(self.preferences)}, ())
        listed = np.isfinite(rank[group[pairs.rows], pairs.arms])
        price = blended_price(dataset.price_in[pairs.rows, pairs.arms], dataset.price_out[pairs.rows, pairs.arms])
        balance = np.where(listed, np.maximum(price, 1e-6) ** -self.exponent, 0.0)
        first = rank[group[pairs.rows], pairs.arms] <= pairs.row_min(rank[group[pairs.rows], pairs.arms])[pairs.rows]
        weight = np.where(ordered[group[pairs.rows]], (first & listed).astype(np.float64), balance)
        pi, self.n_fallback_ = _normalised(pairs, weight)
        return pi
