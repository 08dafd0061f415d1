"""Distributional outcome models for TTFT and latency: q̂ of 1{Y ≤ t} from the log-scale models and their residual spread.

The log-scale models predict a mean q̂(x, a) (`ope.models.predictors`, Duan-smeared). Around it
the residual e = log(1 + y) − log(1 + q̂(x, a_i)) of the out-of-fold prediction at the logged arm
is tabulated per arm (its empirical quantiles; the pooled residuals for an arm with fewer than
`MIN_ARM_ROWS` logged rows), so

    F̂(t | x, a) = P(Y ≤ t | x, a) = G_a(log(1 + t) − log(1 + q̂(x, a))),

with G_a the residual CDF of arm a, interpolated between its quantiles. The residuals come from
out-of-fold predictions, so they carry the models' own error, not an in-sample fit's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ope.data.dataset import BanditDataset
from policies.tails import TailModel

__all__ = ["MIN_ARM_ROWS", "SPREAD_METRICS", "ResidualSpread"]

FloatArray = npt.NDArray[np.float64]
#: metrics with a distributional model
SPREAD_METRICS = ("ttft_ms", "latency_ms")
#: logged rows an arm needs for its own residual table
MIN_ARM_ROWS = 200
#: quantiles kept per table (levels 0, 1/R, …, 1: the smallest and largest residual included)
KNOTS = 200


@dataclass(frozen=True, slots=True)
class ResidualSpread:
    """Residual quantiles per metric: ``pooled`` (R + 1,) over every training row and ``by_arm`` (K, R + 1), NaN rows for
    arms that use the pooled table; ``levels`` (R + 1,) = 0, 1/R, …, 1."""

    levels: FloatArray
    pooled: dict[str, FloatArray]
    by_arm: dict[str, FloatArray]

    @classmethod
    def fit(cls, ds: BanditDataset, q_hat: FloatArray, rows: npt.NDArray[np.bool_]) -> ResidualSpread:
        """Residual tables from out-of-fold q̂ (n, K, M) at the logged arms of ``rows`` (the models' training rows)."""
        levels = np.linspace(0.0, 1.0, KNOTS + 1)
        idx = np.flatnonzero(rows)
        arms = ds.actions[idx]
        pooled, by_arm = {}, {}
        for metric in SPREAD_METRICS:
            j = ds.metrics.index(metric)
            resid = np.log1p(ds.outcomes[idx, j]) - np.log1p(np.maximum(q_hat[idx, arms, j], 0.0))
            pooled[metric] = np.quantile(resid, levels) if resid.size else np.zeros(levels.size)
            table = np.full((ds.catalog.n_arms, levels.size), np.nan)
            for arm in np.flatnonzero(np.bincount(arms, minlength=ds.catalog.n_arms) >= MIN_ARM_ROWS):
                table[arm] = np.quantile(resid[arms == arm], levels)
            by_arm[metric] = table
        return cls(levels, pooled, by_arm)

    def cdf(self, metric: str, q_pred: FloatArray, arms: npt.NDArray[np.int64], thresholds: FloatArray) -> FloatArray:
        """(P, G) F̂(t_g | x, a) for P pairs with predicted means ``q_pred`` on arms ``arms``."""
        lt, lq = np.log1p(np.asarray(thresholds, dtype=np.float64)), np.log1p(np.maximum(q_pred, 0.0))
        table = self.by_arm[metric]
        own = ~np.isnan(table[:, 0])
        key = np.where(own[arms], arms, -1)           # -1: the pooled table
        order = np.argsort(key, kind="stable")
        ranked = key[order]
        cuts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1], True])
        out = np.empty((lq.size, lt.size))
        for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            arm, rows = int(ranked[lo]), order[lo:hi]
            knots = self.pooled[metric] if arm < 0 else table[arm]
            out[rows] = np.interp(lt[None, :] - lq[rows, None], knots, self.levels, left=0.0, right=1.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (the models' manifest)."""
        return {"levels": self.levels.tolist(), "pooled": {m: v.tolist() for m, v in self.pooled.items()},
                "by_arm": {m: [None if np.isnan(row[0]) else row.tolist() for row in v] for m, v in self.by_arm.items()}}

    def tail_model(self) -> TailModel:
        """The constrained router's form of it: per-arm knots, the pooled ones for arms without their own table."""
        knots = {m: np.where(np.isnan(table[:, :1]), self.pooled[m][None, :], table) for m, table in self.by_arm.items()}
        return TailModel(self.levels, knots)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ResidualSpread:
        """The spread `to_dict` wrote."""
        levels = np.asarray(spec["levels"], dtype=np.float64)
        by_arm = {m: np.array([np.full(levels.size, np.nan) if row is None else row for row in rows], dtype=np.float64)
                  for m, rows in spec["by_arm"].items()}
        return cls(levels, {m: np.asarray(v, dtype=np.float64) for m, v in spec["pooled"].items()}, by_arm)
