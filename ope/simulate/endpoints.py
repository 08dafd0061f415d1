"""The endpoint table: every arm's parameters as arrays on the K axis, and its price snapshots.

Arms are sorted by name (``provider/model``); that order is the K axis everywhere in llm-ope.
The catalog frame (DESIGN §5) is written from the same table, so the catalog a user reads and
the prices the simulator charges cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.simulate.clock import to_us
from ope.simulate.spec import FAILURE_STATUSES, WorldSpec

__all__ = [
    "NO_CAP",
    "ArmTable",
    "PriceSchedule",
    "arm_table",
    "catalog_frame",
    "change_time_us",
    "price_schedule",
]

#: "no cap" for an output cap, as an integer that every latent length is below
NO_CAP = np.iinfo(np.int64).max

_PROVIDER_FLOATS = (
    "sigma_ttft",
    "sigma_tps",
    "prefill_tps",
    "ttft_load",
    "tps_load",
    "ttft_drift_per_day",
    "tps_drift_per_day",
    "bad_request_tools",
    "bad_request_json",
    "error_load",
    "overflow_rate",
    "overflow_fraction",
    "sat_delta",
    "sat_tools_delta",
)


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class ArmTable:
    """Per-arm parameters, each a length-K array in arm order.

    ``model`` and ``provider`` index ``spec.models`` / ``spec.providers``; ``base_failure`` is
    (K, F), the zero-load probability of each failure status in ``FAILURE_STATUSES`` order
    (context overflow is handled by the overflow quirk, so its column is 0 here).
    """

    arms: tuple[str, ...]
    model: npt.NDArray[np.int64]
    provider: npt.NDArray[np.int64]
    official: npt.NDArray[np.bool_]
    context_tokens: npt.NDArray[np.int64]
    supports_tools: npt.NDArray[np.bool_]
    supports_json: npt.NDArray[np.bool_]
    ttft_ms: npt.NDArray[np.float64]
    tps: npt.NDArray[np.float64]
    output_cap: npt.NDArray[np.int64]
    base_failure: npt.NDArray[np.float64]
    sigma_ttft: npt.NDArray[np.float64]
    sigma_tps: npt.NDArray[np.float64]
    prefill_tps: npt.NDArray[np.float64]
    ttft_load: npt.NDArray[np.float64]
    tps_load: npt.NDArray[np.float64]
    ttft_drift_per_day: npt.NDArray[np.float64]
    tps_drift_per_day: npt.NDArray[np.float64]
    bad_request_tools: npt.NDArray[np.float64]
    bad_request_json: npt.NDArray[np.float64]
    error_load: npt.NDArray[np.float64]
    overflow_rate: npt.NDArray[np.float64]
    overflow_fraction: npt.NDArray[np.float64]
    sat_delta: npt.NDArray[np.float64]
    sat_tools_delta: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class PriceSchedule:
    """Price snapshots, one row per arm per snapshot, sorted by ``valid_from`` then arm.

    The first snapshot of each arm starts at the log start; the price in force at ``ts`` is the
    snapshot with the latest ``valid_from <= ts``.
    """

    arm: npt.NDArray[np.int64]
    valid_from_us: npt.NDArray[np.int64]
    price_in: npt.NDArray[np.float64]
    price_out: npt.NDArray[np.float64]

    def prices_at(
        self, arm: npt.NDArray[np.int64], ts_us: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Input and output price (USD per Mtok) in force for each (arm, ts) pair.

        Snapshots are applied in ``valid_from`` order, so the loop runs over snapshots, never rows.
        """
        price_in = np.full(arm.shape, np.nan)
        price_out = np.full(arm.shape, np.nan)
        for k, start, p_in, p_out in zip(self.arm, self.valid_from_us, self.price_in, self.price_out, strict=True):
            hit = (arm == k) & (ts_us >= start)
            price_in[hit] = p_in
            price_out[hit] = p_out
        return price_in, price_out


def arm_table(spec: WorldSpec) -> ArmTable:
    """Gather endpoint and provider parameters into length-K arrays, arms sorted by name."""
    endpoints = sorted(spec.endpoints, key=lambda e: e.arm)
    model_idx = {m.name: i for i, m in enumerate(spec.models)}
    provider_idx = {p.name: i for i, p in enumerate(spec.providers)}
    makers = {m.name: m.maker for m in spec.models}
    provs = [spec.providers[provider_idx[e.provider]] for e in endpoints]
    base_failure = np.array(
        [[getattr(p, s.value) if s.value != "context_overflow" else 0.0 for s in FAILURE_STATUSES] for p in provs]
    )
    caps = [NO_CAP if p.output_cap is None else p.output_cap for p in provs]
    return ArmTable(
        arms=tuple(e.arm for e in endpoints),
        model=np.array([model_idx[e.model] for e in endpoints], dtype=np.int64),
        provider=np.array([provider_idx[e.provider] for e in endpoints], dtype=np.int64),
        official=np.array([makers[e.model] == e.provider for e in endpoints]),
        context_tokens=np.array([e.context_tokens for e in endpoints], dtype=np.int64),
        supports_tools=np.array([e.supports_tools for e in endpoints]),
        supports_json=np.array([e.supports_json for e in endpoints]),
        ttft_ms=np.array([e.ttft_ms for e in endpoints], dtype=np.float64),
        tps=np.array([e.tps for e in endpoints], dtype=np.float64),
        output_cap=np.array(caps, dtype=np.int64),
        base_failure=base_failure.astype(np.float64),
        **{f: np.array([getattr(p, f) for p in provs], dtype=np.float64) for f in _PROVIDER_FLOATS},
    )


def change_time_us(start_us: int, days: float, at_fraction: float) -> int:
    """When a scheduled event at ``at_fraction`` of the window happens, rounded to the minute."""
    minutes = max(1, round(at_fraction * days * 24 * 60))
    return start_us + minutes * 60_000_000


def price_schedule(spec: WorldSpec, table: ArmTable, days: float) -> PriceSchedule:
    """The list prices at the log start, then every scheduled price change inside the window."""
    start_us = to_us(spec.start)
    index = {arm: k for k, arm in enumerate(table.arms)}
    by_arm = {e.arm: e for e in spec.endpoints}
    rows = [(k, start_us, by_arm[a].price_in_per_mtok, by_arm[a].price_out_per_mtok) for a, k in index.items()]
    for change in spec.price_changes:
        when = change_time_us(start_us, days, change.at_fraction)
        rows.append((index[change.arm], when, change.price_in_per_mtok, change.price_out_per_mtok))
    rows.sort(key=lambda r: (r[1], r[0]))
    arm, valid_from, p_in, p_out = zip(*rows, strict=True)
    return PriceSchedule(
        arm=np.array(arm, dtype=np.int64),
        valid_from_us=np.array(valid_from, dtype=np.int64),
        price_in=np.array(p_in, dtype=np.float64),
        price_out=np.array(p_out, dtype=np.float64),
    )


def catalog_frame(spec: WorldSpec, table: ArmTable, schedule: PriceSchedule) -> pl.DataFrame:
    """The catalog (DESIGN §5): one row per arm per price snapshot, sorted by arm then valid_from."""
    k = schedule.arm
    frame = pl.DataFrame(
        {
            "arm": [table.arms[i] for i in k],
            "provider": [spec.providers[p].name for p in table.provider[k]],
            "model": [spec.models[m].name for m in table.model[k]],
            "official": table.official[k],
            "price_in_per_mtok": schedule.price_in,
            "price_out_per_mtok": schedule.price_out,
            "context_tokens": table.context_tokens[k],
            "supports_tools": table.supports_tools[k],
            "supports_json": table.supports_json[k],
            "valid_from": schedule.valid_from_us,
        },
        schema_overrides={"context_tokens": pl.Int64},
    )
    frame = frame.with_columns(pl.col("valid_from").cast(pl.Datetime("us", "UTC")))
    return frame.sort("arm", "valid_from")
