"""What each eligible arm would face on each request: the distribution its outcome is drawn from.

For every eligible pair (i, a) the outcome distribution is fully described by a few numbers:
the price in force, the (deterministic) answer length, the lognormal parameters of TTFT and
tokens/s, the status probabilities and the probability of a satisfied user. The sampler draws
from them and :mod:`ope.simulate.moments` integrates them exactly, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ope.data.schema import Status
from ope.errors import ConfigError
from ope.simulate.clock import US_PER_HOUR, days_since, load_at, to_us
from ope.simulate.contexts import Contexts
from ope.simulate.endpoints import ArmTable, PriceSchedule, change_time_us
from ope.simulate.spec import FAILURE_STATUSES, WorldSpec

__all__ = ["Conditions", "eligibility", "pair_conditions"]

_F = {s: j for j, s in enumerate(FAILURE_STATUSES)}
_MIN_OK = 0.5


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class Conditions:
    """Outcome distributions of the P eligible (request, arm) pairs, as length-P arrays.

    Pairs are in row-major order of the eligibility mask (``np.nonzero``): ``rows`` ascending.
    ``status_probs`` is (P, S) in ``STATUSES`` order (``ok`` first). On an ``ok`` request,
    log-TTFT ~ N(mu_ttft, sigma_ttft²) and log-tokens/s ~ N(mu_tps, sigma_tps²), independent.
    """

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    price_in: npt.NDArray[np.float64]
    price_out: npt.NDArray[np.float64]
    mu_ttft: npt.NDArray[np.float64]
    sigma_ttft: npt.NDArray[np.float64]
    mu_tps: npt.NDArray[np.float64]
    sigma_tps: npt.NDArray[np.float64]
    status_probs: npt.NDArray[np.float64]
    p_satisfied: npt.NDArray[np.float64]

    @property
    def ok_cost(self) -> npt.NDArray[np.float64]:
        """Cost in USD of an ``ok`` answer: (in · price_in + out · price_out) / 1e6."""
        return (self.input_tokens * self.price_in + self.output_tokens * self.price_out) / 1e6


def eligibility(table: ArmTable, ctx: Contexts) -> npt.NDArray[np.bool_]:
    """(n, K) mask: the arm serves the request's model, its context fits, it supports every need."""
    return (
        (ctx.model[:, None] == table.model[None, :])
        & (ctx.input_tokens[:, None] <= table.context_tokens[None, :])
        & (~ctx.needs_tools[:, None] | table.supports_tools[None, :])
        & (~ctx.needs_json[:, None] | table.supports_json[None, :])
    )


def _incidents(
    spec: WorldSpec, table: ArmTable, cols: npt.NDArray[np.int64], ts: npt.NDArray[np.int64], days: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Extra server-error probability and extra log-TTFT of every pair from provider incidents."""
    start_us = to_us(spec.start)
    names = [p.name for p in spec.providers]
    extra_error = np.zeros(cols.shape[0])
    extra_log_ttft = np.zeros(cols.shape[0])
    for incident in spec.incidents:
        begin = change_time_us(start_us, days, incident.at_fraction)
        end = begin + round(incident.hours * US_PER_HOUR)
        hit = (table.provider[cols] == names.index(incident.provider)) & (ts >= begin) & (ts < end)
        extra_error[hit] += incident.server_error
        extra_log_ttft[hit] += np.log(incident.ttft_factor)
    return extra_error, extra_log_ttft


def _status_probs(
    table: ArmTable,
    ctx: Contexts,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    load: npt.NDArray[np.float64],
    extra_error: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """(P, S) status probabilities: load-driven 429/5xx/timeouts, protocol and tokenizer failures."""
    fail = table.base_failure[cols].copy()
    busy = 1.0 + table.error_load[cols] * load
    for status in (Status.RATE_LIMITED, Status.SERVER_ERROR, Status.TIMEOUT):
        fail[:, _F[status]] *= busy
    fail[:, _F[Status.SERVER_ERROR]] += extra_error
    fail[:, _F[Status.BAD_REQUEST]] += (
        table.bad_request_tools[cols] * ctx.needs_tools[rows] + table.bad_request_json[cols] * ctx.needs_json[rows]
    )
    near_limit = ctx.input_tokens[rows] > table.overflow_fraction[cols] * table.context_tokens[cols]
    fail[:, _F[Status.CONTEXT_OVERFLOW]] = np.where(near_limit, table.overflow_rate[cols], 0.0)
    ok = 1.0 - fail.sum(axis=1)
    if ok.min(initial=1.0) < _MIN_OK:
        msg = f"The world's failure probabilities are too high: P(ok) falls to {ok.min():.3f} (< {_MIN_OK})."
        raise ConfigError(msg)
    return np.column_stack([ok, fail])


def pair_conditions(
    spec: WorldSpec,
    table: ArmTable,
    schedule: PriceSchedule,
    ctx: Contexts,
    eligible: npt.NDArray[np.bool_],
    days: float,
) -> Conditions:
    """The outcome distribution of every eligible (request, arm) pair."""
    rows, cols = (idx.astype(np.int64) for idx in np.nonzero(eligible))
    ts = ctx.ts_us[rows]
    load = load_at(ts, spec.peak_hour)
    day = days_since(ts, to_us(spec.start))
    extra_error, extra_log_ttft = _incidents(spec, table, cols, ts, days)
    input_tokens = ctx.input_tokens[rows]
    prefill_ms = 1000.0 * input_tokens / table.prefill_tps[cols]
    mu_ttft = (
        np.log(table.ttft_ms[cols] + prefill_ms)
        + table.ttft_load[cols] * load
        + table.ttft_drift_per_day[cols] * day
        + extra_log_ttft
    )
    mu_tps = np.log(table.tps[cols]) - table.tps_load[cols] * load + table.tps_drift_per_day[cols] * day
    latent = ctx.latent_output[rows]
    capped = latent > table.output_cap[cols]
    task_sat = np.array([t.sat_logit for t in spec.tasks])[ctx.task[rows]]
    quality = np.array([m.quality for m in spec.models])[ctx.model[rows]]
    logit = (
        task_sat
        + quality
        + table.sat_delta[cols]
        + table.sat_tools_delta[cols] * ctx.needs_tools[rows]
        + spec.cap_sat_penalty * capped
    )
    price_in, price_out = schedule.prices_at(cols, ts)
    return Conditions(
        rows=rows,
        cols=cols,
        input_tokens=input_tokens,
        output_tokens=np.minimum(latent, table.output_cap[cols]),
        price_in=price_in,
        price_out=price_out,
        mu_ttft=mu_ttft,
        sigma_ttft=table.sigma_ttft[cols],
        mu_tps=mu_tps,
        sigma_tps=table.sigma_tps[cols],
        status_probs=_status_probs(table, ctx, rows, cols, load, extra_error),
        p_satisfied=1.0 / (1.0 + np.exp(-logit)),
    )
