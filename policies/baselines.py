"""Baseline routers: direct official access, cheapest, fastest, price-weighted, uniform, ε-mixtures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from policies.base import BLOCK_ROWS, FloatArray, Policy, PolicyError, spread, uniform_over

if TYPE_CHECKING:
    from ope.dataset import BanditDataset

__all__ = ["DirectOfficial", "Cheapest", "Fastest", "PriceWeighted", "Uniform", "Mixture", "blended_price"]


def blended_price(price_in: FloatArray, price_out: FloatArray) -> FloatArray:
    """USD per million tokens at a 3:1 input:output mix, the usual single-number list price."""
    return (3.0 * price_in + price_out) / 4.0


@dataclass(kw_only=True)
class Uniform:
    """Uniform over each request's eligible arms."""

    name: str = "uniform"

    def fit(self, dataset: BanditDataset) -> Uniform:
        return self

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        return uniform_over(dataset.eligible)


@dataclass(kw_only=True)
class DirectOfficial:
    """Always the model maker's own endpoint (the baseline reports compare against).

    ``fallback`` decides what happens to requests whose model has no eligible official arm:
    "error" (default) raises naming the models; "uniform" or "cheapest" routes them so and counts
    them in ``n_fallback_``.
    """

    name: str = "direct_official"
    fallback: Literal["error", "uniform", "cheapest"] = "error"
    n_fallback_: int = field(default=0, init=False)
    fallback_output_: dict[str, float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.fallback not in ("error", "uniform", "cheapest"):
            msg = f"The 'fallback' setting of direct_official must be 'error', 'uniform' or 'cheapest'. Got {self.fallback!r} instead."
            raise ValueError(msg)

    def fit(self, dataset: BanditDataset) -> DirectOfficial:
        """Learn the cheapest fallback's expected output lengths on the training rows (not on each evaluated batch)."""
        if self.fallback == "cheapest":
            self.fallback_output_ = Cheapest().fit(dataset).expected_output_
        return self

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        official = dataset.catalog.arms_frame["official"].to_numpy().astype(bool)
        mask = dataset.eligible & official[None, :]
        pi = uniform_over(mask)
        missing = ~mask.any(axis=1)
        self.n_fallback_ = int(missing.sum())
        if not missing.any():
            return pi
        if self.fallback == "error":
            models = dataset.logs["model"].filter(pl.Series(missing)).unique().sort().head(5).to_list()
            msg = (
                f"direct_official: {int(missing.sum())} requests have no eligible official endpoint "
                f"(models {models}). Set fallback = 'uniform' or 'cheapest' to route them anyway."
            )
            raise PolicyError(msg)
        other: Policy = Uniform()
        if self.fallback == "cheapest":
            cheapest = Cheapest()
            cheapest.expected_output_ = self.fallback_output_ if self.fallback_output_ is not None else cheapest.fit(dataset).expected_output_
            other = cheapest
        pi[missing] = other.action_probabilities(dataset.subset(missing))
        return pi


@dataclass(kw_only=True)
class Cheapest:
    """The eligible arm with the lowest list price for the request's tokens.

    Output tokens are not known before serving: each task's median output on ok rows (learned
    in ``fit``) stands in for them.
    """

    name: str = "cheapest"
    expected_output_: dict[str, float] = field(default_factory=dict, init=False)

    def fit(self, dataset: BanditDataset) -> Cheapest:
        ok = dataset.logs.filter(pl.col("status") == "ok")
        med = ok.group_by("task").agg(pl.col("output_tokens").median())
        self.expected_output_ = dict(med.iter_rows())
        return self

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        default = float(np.median(list(self.expected_output_.values()))) if self.expected_output_ else 0.0
        out = dataset.logs["task"].replace_strict(self.expected_output_, default=default, return_dtype=pl.Float64)
        tokens_in, tokens_out = dataset.logs["input_tokens"].to_numpy(), out.to_numpy()
        cost = np.empty(dataset.eligible.shape)
        for start in range(0, cost.shape[0], BLOCK_ROWS):  # blocks of rows: the products' temporaries stay in cache
            rows = slice(start, start + BLOCK_ROWS)
            np.multiply(tokens_in[rows, None], dataset.price_in[rows], out=cost[rows])
            cost[rows] += tokens_out[rows, None] * dataset.price_out[rows]
        return spread(cost, dataset.eligible, overwrite=True)


@dataclass(kw_only=True)
class Fastest:
    """The eligible arm with the lowest median end-to-end latency on ok rows in the logs."""

    name: str = "fastest"
    median_latency_: dict[str, float] = field(default_factory=dict, init=False)

    def fit(self, dataset: BanditDataset) -> Fastest:
        ok = dataset.logs.filter(pl.col("status") == "ok")
        self.median_latency_ = dict(ok.group_by("arm").agg(pl.col("latency_ms").median()).iter_rows())
        return self

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        latency = np.array([self.median_latency_.get(a, np.inf) for a in dataset.arms])
        return spread(np.broadcast_to(latency, dataset.eligible.shape), dataset.eligible)


@dataclass(kw_only=True)
class PriceWeighted:
    """Load balancing with weights ∝ 1 / price², as OpenRouter documents for its default routing."""

    name: str = "price_weighted"

    def fit(self, dataset: BanditDataset) -> PriceWeighted:
        return self

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        p_in, p_out = dataset.price_in, dataset.price_out
        one_row = len(p_in) > 0 and p_in.strides[0] == 0 and p_out.strides[0] == 0  # a batch within one price period
        price = blended_price(p_in[:1], p_out[:1]) if one_row else blended_price(p_in, p_out)  # (1, K) or (n, K)
        free = dataset.eligible & (price <= 0)
        with np.errstate(divide="ignore"):
            weight = np.where(dataset.eligible & (price > 0), 1.0 / price**2, 0.0)
        pi = np.divide(weight, np.maximum(weight.sum(axis=1, keepdims=True), 1e-300), out=weight)
        has_free = free.any(axis=1)
        pi[has_free] = uniform_over(free[has_free])
        return pi


@dataclass(kw_only=True)
class Mixture:
    """(1 − ε) · policy + ε · uniform over eligible arms: keeps every eligible arm evaluable."""

    policy: Policy
    epsilon: float
    name: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            msg = f"The 'epsilon' setting (exploration mixed into a policy) must be a float in [0, 1]. Got {self.epsilon!r} instead."
            raise ValueError(msg)
        self.name = self.name or f"{self.policy.name}+eps{self.epsilon:g}"

    def fit(self, dataset: BanditDataset) -> Mixture:
        self.policy.fit(dataset)
        return self

    def action_probabilities(self, dataset: BanditDataset) -> FloatArray:
        base = self.policy.action_probabilities(dataset)
        # (1 − ε) π + ε u, adding ε / |eligible| only where eligible (u is 0 elsewhere): one (n, K) array, the
        # baselines' own when they made it for this call (other policies may hand out an array they keep)
        pi = np.multiply(base, 1 - self.epsilon, out=base if type(self.policy) in _FRESH else None)
        explore = self.epsilon * (1.0 / np.maximum(np.einsum("nk->n", dataset.eligible.view(np.uint8), dtype=np.int64), 1))
        return np.add(pi, explore[:, None], out=pi, where=dataset.eligible)


#: policies whose action probabilities are a new array on every call, which a `Mixture` may overwrite
_FRESH = (Uniform, DirectOfficial, Cheapest, Fastest, PriceWeighted)
