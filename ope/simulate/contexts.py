"""Request contexts: who asked, when, for which model and task, how long, needing what.

A context holds everything a routing decision may depend on, plus one hidden variable: the
latent answer length L >= 1. An ``ok`` answer has ``min(L, output cap of the arm)`` tokens, so
output tokens are deterministic given context and arm and expectations stay exact.

The log is a *sample* of full traffic: tenant t is logged at rate r_t, so logged rows are drawn
with tenant probability proportional to share_t * r_t and carry ``sample_weight = 1 / r_t``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from ope.errors import OPEError
from ope.simulate.clock import US_PER_DAY, load_at, to_us
from ope.simulate.endpoints import ArmTable
from ope.simulate.spec import WorldSpec

__all__ = ["Contexts", "max_context", "sample_contexts"]

_MAX_REDRAWS = 200


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Contexts:
    """n request contexts as parallel arrays, sorted by arrival time.

    ``tenant``, ``model`` and ``task`` index ``spec.tenants`` / ``spec.models`` / ``spec.tasks``.
    """

    ts_us: npt.NDArray[np.int64]
    tenant: npt.NDArray[np.int64]
    model: npt.NDArray[np.int64]
    task: npt.NDArray[np.int64]
    input_tokens: npt.NDArray[np.int64]
    needs_tools: npt.NDArray[np.bool_]
    needs_json: npt.NDArray[np.bool_]
    latent_output: npt.NDArray[np.int64]
    sample_weight: npt.NDArray[np.float64]

    @property
    def n(self) -> int:
        """Number of requests."""
        return int(self.ts_us.shape[0])

    def take(self, index: npt.NDArray[np.int64]) -> Contexts:
        """The contexts at ``index``, in that order."""
        return Contexts(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def max_context(table: ArmTable, n_models: int) -> npt.NDArray[np.int64]:
    """Longest prompt some arm can take, per (model, needs_tools, needs_json): shape (models, 2, 2)."""
    out = np.zeros((n_models, 2, 2), dtype=np.int64)
    for tools in (0, 1):
        for js in (0, 1):
            ok = (table.supports_tools | (tools == 0)) & (table.supports_json | (js == 0))
            ctx = np.where(ok, table.context_tokens, 0)
            np.maximum.at(out[:, tools, js], table.model, ctx)
    return out


def _arrivals(
    rng: np.random.Generator, n: int, start_us: int, window_us: int, spec: WorldSpec
) -> npt.NDArray[np.int64]:
    """Arrival times with density proportional to ``arrival_floor + load(t)`` (rejection sampling)."""
    kept: list[npt.NDArray[np.int64]] = []
    have = 0
    ceiling = spec.arrival_floor + 1.0
    while have < n:
        proposal = start_us + np.floor(rng.random(2 * (n - have) + 64) * window_us).astype(np.int64)
        density = spec.arrival_floor + load_at(proposal, spec.peak_hour)
        accepted = proposal[rng.random(proposal.shape[0]) * ceiling < density]
        kept.append(accepted)
        have += accepted.shape[0]
    return np.concatenate(kept)[:n]


def _categorical(rng: np.random.Generator, probs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """One draw per row of an (n, J) probability matrix, by inverting the row's CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.minimum((u[:, None] >= cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _lognormal_tokens(
    rng: np.random.Generator, median: npt.NDArray[np.float64], sigma: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """Token counts >= 1 from a lognormal with the given median and log-scale sigma."""
    return np.maximum(1, np.rint(median * np.exp(sigma * rng.standard_normal(median.shape[0])))).astype(np.int64)


def _task_probabilities(spec: WorldSpec) -> npt.NDArray[np.float64]:
    """(tenants, tasks) task mix per tenant: base shares times the tenant's tilt, normalized."""
    base = np.array([t.share for t in spec.tasks])
    names = [t.name for t in spec.tasks]
    mix = np.tile(base, (len(spec.tenants), 1))
    for i, tenant in enumerate(spec.tenants):
        for task, factor in tenant.task_tilt:
            mix[i, names.index(task)] *= factor
    return mix / mix.sum(axis=1, keepdims=True)


def sample_contexts(spec: WorldSpec, table: ArmTable, rows: int, days: float, rng: np.random.Generator) -> Contexts:
    """Draw ``rows`` logged request contexts over ``days`` days from ``spec.start``.

    Prompts longer than every arm that could serve the request are redrawn from the same task
    distribution: a gateway only logs requests it could route.
    """
    start_us = to_us(spec.start)
    window_us = round(days * US_PER_DAY)
    logged = np.array([t.share * t.sample_rate for t in spec.tenants])
    tenant = rng.choice(len(spec.tenants), size=rows, p=logged / logged.sum())
    ts_us = _arrivals(rng, rows, start_us, window_us, spec)
    model = rng.choice(len(spec.models), size=rows, p=np.array([m.share for m in spec.models]))
    task = _categorical(rng, _task_probabilities(spec)[tenant])
    p_tools = np.array([t.p_tools for t in spec.tasks])
    p_json = np.array([t.p_json for t in spec.tasks])
    needs_tools = rng.random(rows) < p_tools[task]
    needs_json = rng.random(rows) < p_json[task]
    in_median = np.array([t.input_median for t in spec.tasks], dtype=np.float64)
    in_sigma = np.array([t.input_sigma for t in spec.tasks], dtype=np.float64)
    input_tokens = _lognormal_tokens(rng, in_median[task], in_sigma[task])
    limit = max_context(table, len(spec.models))[model, needs_tools.astype(int), needs_json.astype(int)]
    for _ in range(_MAX_REDRAWS):
        too_long = np.flatnonzero(input_tokens > limit)
        if too_long.size == 0:
            break
        t = task[too_long]
        input_tokens[too_long] = _lognormal_tokens(rng, in_median[t], in_sigma[t])
    else:
        msg = f"Could not draw prompts that fit any endpoint for {too_long.size} requests."
        raise OPEError(msg)
    out_median = np.array([t.output_median for t in spec.tasks], dtype=np.float64)
    out_sigma = np.array([t.output_sigma for t in spec.tasks], dtype=np.float64)
    latent = _lognormal_tokens(rng, out_median[task], out_sigma[task])
    rate = np.array([t.sample_rate for t in spec.tenants])
    contexts = Contexts(
        ts_us=ts_us,
        tenant=tenant.astype(np.int64),
        model=model.astype(np.int64),
        task=task,
        input_tokens=input_tokens,
        needs_tools=needs_tools,
        needs_json=needs_json,
        latent_output=latent,
        sample_weight=1.0 / rate[tenant],
    )
    return contexts.take(np.argsort(ts_us, kind="stable"))
