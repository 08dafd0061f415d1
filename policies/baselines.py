"""Baseline routers: direct official access, cheapest, fastest, price-weighted, uniform, ε-mixtures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import polars as pl

from policies.base import (
    BasePolicy,
    DeclaredTarget,
    FloatArray,
    Pairs,
    PairwisePolicy,
    Policy,
    PolicyError,
    declared_targets,
    policy_from_json,
    policy_to_json,
    uniform_over,
)

if TYPE_CHECKING:
    from policies.context import RoutingContext

__all__ = ["DirectOfficial", "Cheapest", "Fastest", "PriceWeighted", "Uniform", "Mixture", "blended_price"]


def blended_price(price_in: FloatArray, price_out: FloatArray) -> FloatArray:
    """USD per million tokens at a 3:1 input:output mix, the usual single-number list price."""
    return (3.0 * price_in + price_out) / 4.0


@dataclass(kw_only=True)
class Uniform(PairwisePolicy):
    """Uniform over each request's eligible arms."""

    name: str = "uniform"

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> Uniform:
        return self

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        return pairs.uniform(np.ones(pairs.rows.size, dtype=bool))


@dataclass(kw_only=True)
class DirectOfficial(PairwisePolicy):
    """Always the model maker's own endpoint (the baseline reports compare against).

    ``fallback`` decides what happens to requests whose model has no eligible official arm:
    "error" (default) raises naming the models; "uniform" or "cheapest" routes them so and counts
    them in ``n_fallback_``.
    """

    name: str = "direct_official"
    fallback: Literal["error", "uniform", "cheapest"] = "error"
    n_fallback_: int = field(default=0, init=False)
    fallback_output_: dict[str, float] | None = field(default=None, init=False)

    @property
    def fallback_rule(self) -> str:
        return f"{self.fallback}, for requests with no eligible official endpoint"

    def __post_init__(self) -> None:
        if self.fallback not in ("error", "uniform", "cheapest"):
            msg = f"The 'fallback' setting of direct_official must be 'error', 'uniform' or 'cheapest'. Got {self.fallback!r} instead."
            raise ValueError(msg)

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> DirectOfficial:
        """Learn the cheapest fallback's expected output lengths on the training rows (not on each evaluated batch)."""
        if self.fallback == "cheapest":
            self.fallback_output_ = Cheapest().fit(dataset).expected_output_
        return self

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        official = dataset.arm_attributes["official"].to_numpy().astype(bool)[pairs.arms]
        pi = pairs.uniform(official)
        missing = pairs.row_sum(official.astype(np.float64)) == 0
        self.n_fallback_ = int(missing.sum())
        if not missing.any():
            return pi
        if self.fallback == "error":
            models = dataset.requests["model"].filter(pl.Series(missing)).unique().sort().head(5).to_list()
            msg = (
                f"direct_official: {int(missing.sum())} requests have no eligible official endpoint "
                f"(models {models}). Set fallback = 'uniform' or 'cheapest' to route them anyway."
            )
            raise PolicyError(msg)
        other: PairwisePolicy = Uniform()
        if self.fallback == "cheapest":
            cheapest = Cheapest()
            cheapest.expected_output_ = self.fallback_output_ if self.fallback_output_ is not None else cheapest.fit(dataset).expected_output_
            other = cheapest
        return np.where(missing[pairs.rows], other.pair_probabilities(dataset, pairs), pi)


@dataclass(kw_only=True)
class Cheapest(PairwisePolicy):
    """The eligible arm with the lowest list price for the request's tokens.

    Output tokens are not known before serving: each task's median output on ok rows (learned
    in ``fit``) stands in for them.
    """

    learns: ClassVar[bool] = True
    name: str = "cheapest"
    expected_output_: dict[str, float] = field(default_factory=dict, init=False)

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> Cheapest:
        ok = dataset.requests.filter(pl.col("status") == "ok")
        med = ok.group_by("task").agg(pl.col("output_tokens").median())
        self.expected_output_ = dict(med.iter_rows())
        return self

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        default = float(np.median(list(self.expected_output_.values()))) if self.expected_output_ else 0.0
        out = dataset.requests["task"].replace_strict(self.expected_output_, default=default, return_dtype=pl.Float64)
        tokens_in, tokens_out = dataset.requests["input_tokens"].to_numpy()[pairs.rows], out.to_numpy()[pairs.rows]
        cost = tokens_in * dataset.price_in[pairs.rows, pairs.arms] + tokens_out * dataset.price_out[pairs.rows, pairs.arms]
        return pairs.lowest(cost)


@dataclass(kw_only=True)
class Fastest(PairwisePolicy):
    """The eligible arm with the lowest median end-to-end latency on ok rows in the logs."""

    learns: ClassVar[bool] = True
    name: str = "fastest"
    median_latency_: dict[str, float] = field(default_factory=dict, init=False)

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> Fastest:
        ok = dataset.requests.filter(pl.col("status") == "ok")
        self.median_latency_ = dict(ok.group_by("arm").agg(pl.col("latency_ms").median()).iter_rows())
        return self

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        latency = np.array([self.median_latency_.get(a, np.inf) for a in dataset.arms])
        return pairs.lowest(latency[pairs.arms])


@dataclass(kw_only=True)
class PriceWeighted(PairwisePolicy):
    """Load balancing with weights ∝ 1 / price², as OpenRouter documents for its default routing."""

    name: str = "price_weighted"

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> PriceWeighted:
        return self

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        price = blended_price(dataset.price_in[pairs.rows, pairs.arms], dataset.price_out[pairs.rows, pairs.arms])
        free = price <= 0
        with np.errstate(divide="ignore"):
            weight = np.where(free, 0.0, 1.0 / price**2)
        pi = weight / np.maximum(pairs.row_sum(weight), 1e-300)[pairs.rows]
        has_free = pairs.row_sum(free.astype(np.float64)) > 0
        return np.where(has_free[pairs.rows], pairs.uniform(free), pi)


@dataclass(kw_only=True)
class Mixture(BasePolicy):
    """(1 − ε) · policy + ε · uniform over eligible arms: keeps every eligible arm evaluable.

    Its capabilities are the inner policy's (an ε-mixture of an online router is not offered: see the registry).
    """

    policy: Policy
    epsilon: float
    name: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            msg = f"The 'epsilon' setting (exploration mixed into a policy) must be a float in [0, 1]. Got {self.epsilon!r} instead."
            raise ValueError(msg)
        self.name = self.name or f"{self.policy.name}+eps{self.epsilon:g}"

    @property  # type: ignore[misc]
    def needs_q_hat(self) -> bool:  # type: ignore[override]
        return self.policy.needs_q_hat

    @property  # type: ignore[misc]
    def learns(self) -> bool:  # type: ignore[override]
        return self.policy.learns

    @property  # type: ignore[misc]
    def pairwise(self) -> bool:  # type: ignore[override]
        return self.policy.pairwise

    @property  # type: ignore[misc]
    def cross_fit(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.policy, "cross_fit", False))

    def targets(self) -> tuple[DeclaredTarget, ...]:
        return declared_targets(self.policy)

    @property  # type: ignore[misc]
    def n_fallback_(self) -> int:  # type: ignore[override]
        return self.policy.n_fallback_

    @property
    def fallback_rule(self) -> str:
        return self.policy.fallback_rule

    def fit(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> Mixture:
        self.policy.fit(dataset, q_hat)
        return self

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "epsilon": self.epsilon, "policy": policy_to_json(self.policy)})

    @classmethod
    def from_json(cls, text: str) -> Mixture:
        data = json.loads(text)
        return cls(policy=policy_from_json(data["policy"]), epsilon=data["epsilon"], name=data["name"])

    def action_probabilities(self, dataset: RoutingContext, q_hat: FloatArray | None = None) -> FloatArray:
        return (1 - self.epsilon) * self.policy.action_probabilities(dataset, q_hat) + self.epsilon * uniform_over(dataset.eligible)

    def pair_probabilities(self, dataset: RoutingContext, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        base = self.policy.pair_probabilities(dataset, pairs, q_hat)
        return (1 - self.epsilon) * base + self.epsilon * pairs.uniform(np.ones(pairs.rows.size, dtype=bool))
