"""`BanditDataset`: validated logs + catalog as arrays a contextual-bandit evaluation needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import BanditFeedback
from ope.data.catalog import Catalog, catalog_from_frame, load_catalog
from ope.data.schema import METRICS, REQUIRED_COLUMNS, Status
from ope.data.validate import ValidatedLogs, load_logs, validate_logs
from ope.errors import SchemaError
from policies.context import REQUEST_COLUMNS

__all__ = ["BanditDataset", "derive_outcomes"]

FloatArray = npt.NDArray[np.float64]


def throughput() -> pl.Expr:
    """Output tokens per second of generation (latency − TTFT) of an ok request; 0 for failed or empty ones."""
    gen_s = (pl.col("latency_ms") - pl.col("ttft_ms")) / 1000.0
    return pl.when((pl.col("status") == Status.OK) & (pl.col("output_tokens") > 0)).then(pl.col("output_tokens") / gen_s).otherwise(0.0)


def derive_outcomes(logs: pl.DataFrame, sla_latency_ms: float) -> FloatArray:
    """The derived metrics of DESIGN §4 per row, shape (n, M) in `METRICS` order.

    Satisfaction stays NaN where an ok request has no feedback; a failed request without
    feedback counts 0.
    """
    ok = pl.col("status") == Status.OK
    exprs = {
        "cost_usd": pl.col("cost_usd"),
        "success": ok.cast(pl.Float64),
        "satisfaction": pl.when(ok | pl.col("satisfaction").is_not_null()).then(pl.col("satisfaction")).otherwise(0.0),
        "ttft_ms": pl.col("ttft_ms"),
        "latency_ms": pl.col("latency_ms"),
        "throughput_tps": throughput(),
        "sla_hit": (ok & (pl.col("latency_ms") <= sla_latency_ms)).cast(pl.Float64),
    }
    frame = logs.select([exprs[m].cast(pl.Float64).alias(m) for m in METRICS])
    return frame.to_numpy().astype(np.float64)


@dataclass(frozen=True, slots=True, kw_only=True)
class BanditDataset:
    """One logged request per row as a contextual-bandit sample.

    actions (n,) arm index in catalog order; propensities (n,) with NaN where the log has none;
    eligible (n, K); outcomes (n, M) in `METRICS` order, NaN where missing; sample_weight (n,);
    keys (n,) a stable hash of request_id; price_in / price_out (n, K) list prices in force.
    """

    logs: pl.DataFrame
    catalog: Catalog
    actions: npt.NDArray[np.int64]
    propensities: FloatArray
    eligible: npt.NDArray[np.bool_]
    outcomes: FloatArray
    sample_weight: FloatArray
    keys: npt.NDArray[np.uint64]
    price_in: FloatArray
    price_out: FloatArray
    sla_latency_ms: float
    n_quarantined: int = 0

    @classmethod
    def from_validated(cls, validated: ValidatedLogs, catalog: Catalog, *, sla_latency_ms: float) -> BanditDataset:
        """Build from validated logs (every arm is known and eligible by then)."""
        logs = validated.logs
        actions = catalog.arm_index(logs["arm"])
        eligible = catalog.eligible(logs)
        price_in, price_out = catalog.prices_at(logs["ts"])
        weight = logs["sample_weight"].fill_null(1.0) if "sample_weight" in logs.columns else pl.Series([1.0] * logs.height)
        return cls(
            logs=logs,
            catalog=catalog,
            actions=actions,
            propensities=logs["propensity"].cast(pl.Float64).fill_null(np.nan).to_numpy().copy(),
            eligible=eligible,
            outcomes=derive_outcomes(logs, sla_latency_ms),
            sample_weight=weight.to_numpy().astype(np.float64),
            keys=logs["request_id"].hash(seed=20251001).to_numpy(),
            price_in=price_in,
            price_out=price_out,
            sla_latency_ms=float(sla_latency_ms),
            n_quarantined=validated.n_quarantined,
        )

    @classmethod
    def load(
        cls, logs: str | Path, catalog: str | Path, *, sla_latency_ms: float, quarantine: str | Path | None = None
    ) -> BanditDataset:
        """Read, validate and build in one step."""
        cat = load_catalog(catalog)
        return cls.from_validated(load_logs(logs, cat, quarantine=quarantine), cat, sla_latency_ms=sla_latency_ms)

    @classmethod
    def from_frames(cls, logs: pl.DataFrame, catalog: pl.DataFrame, *, sla_latency_ms: float) -> BanditDataset:
        """Build from in-memory frames (e.g. `ope.simulate`); any validation problem raises."""
        cat = catalog_from_frame(catalog)
        validated = validate_logs(logs, cat)
        if validated.problems:
            raise SchemaError("\n".join(str(p) for p in validated.problems))
        return cls.from_validated(validated, cat, sla_latency_ms=sla_latency_ms)

    @property
    def n(self) -> int:
        """Rows."""
        return self.logs.height

    @property
    def arms(self) -> tuple[str, ...]:
        """Arm names in K-axis order."""
        return self.catalog.arms

    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the outcome columns."""
        return METRICS

    @property
    def arm_attributes(self) -> pl.DataFrame:
        """One row per arm, K-axis order: provider, model, official, prices, context, capabilities (`policies.context`)."""
        return self.catalog.arms_frame

    @property
    def requests(self) -> pl.DataFrame:
        """The request columns policies read (`policies.context.REQUEST_COLUMNS`)."""
        return self.logs.select(REQUEST_COLUMNS)

    @property
    def context_columns(self) -> list[str]:
        """Request context: model, task, input tokens, time, and every extra log column."""
        outcome_cols = set(REQUIRED_COLUMNS) - {"model", "task", "input_tokens", "ts"}
        return [c for c in self.logs.columns if c not in outcome_cols | {"sample_weight", "eligible_arms", "request_id"}]

    def has_propensities(self) -> bool:
        """True when every row carries the logging policy's propensity."""
        return not np.isnan(self.propensities).any()

    def has_satisfaction_feedback(self) -> bool:
        """Whether any successful request carries satisfaction (gateway logs often carry none)."""
        ok = self.outcomes[:, self.metrics.index("success")] == 1
        return bool((ok & ~np.isnan(self.outcomes[:, self.metrics.index("satisfaction")])).any())

    def to_feedback(self, propensities: FloatArray | None = None, *, fill_satisfaction: bool = False) -> BanditFeedback:
        """Arrays for the estimators; ``propensities`` overrides the logged ones (e.g. estimated).

        ``fill_satisfaction`` zero-fills missing satisfaction: for a log with no feedback at all,
        whose satisfaction estimates are blanked afterwards, so the other metrics keep every row.
        """
        p = self.propensities if propensities is None else propensities
        if np.isnan(p).any():
            missing = np.isnan(p)
            ids = self.logs["request_id"].filter(pl.Series(missing)).head(5).to_list()
            msg = (
                f"propensity is null on {int(missing.sum())} of {self.n} rows (first request_ids {ids}); "
                "importance-weighted estimators need the logging policy's probabilities."
            )
            raise SchemaError(msg)
        rewards = self.outcomes
        if fill_satisfaction:
            rewards = rewards.copy()
            sat = rewards[:, self.metrics.index("satisfaction")]
            sat[np.isnan(sat)] = 0.0
        return BanditFeedback(
            actions=self.actions,
            rewards=rewards,
            propensities=p,
            eligible=self.eligible,
            sample_weight=self.sample_weight,
            keys=self.keys,
        )

    def subset(self, rows: npt.NDArray[np.bool_]) -> BanditDataset:
        """The rows where ``rows`` is True (e.g. one day, one model)."""
        idx = np.flatnonzero(rows)
        return BanditDataset(
            logs=self.logs[idx],
            catalog=self.catalog,
            actions=self.actions[idx],
            propensities=self.propensities[idx],
            eligible=self.eligible[idx],
            outcomes=self.outcomes[idx],
            sample_weight=self.sample_weight[idx],
            keys=self.keys[idx],
            price_in=self.price_in[idx],
            price_out=self.price_out[idx],
            sla_latency_ms=self.sla_latency_ms,
            n_quarantined=self.n_quarantined,
        )
