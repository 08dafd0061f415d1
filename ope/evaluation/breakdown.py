"""Where and when a policy's gains come from: estimates per period, per model and per task, and
traffic per provider; plus the long-form rows every estimate is written as."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import BanditFeedback, BaseEstimator, Estimate, EstimatorInputError, SupportWarning
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS

__all__ = ["ESTIMATE_COLUMNS", "GROUP_SCHEMA", "group_rows", "missing_row", "estimate_rows", "time_slices", "breakdowns", "provider_shares", "MIN_GROUP_ROWS"]

ESTIMATE_COLUMNS = ["policy", "metric", "estimator", "kind", "value", "stderr", "ci_low", "ci_high", "n", "ess"]
#: groups with fewer logged rows are not estimated (and the report says so)
MIN_GROUP_ROWS = 200
GROUP_SCHEMA = {"by": pl.String, "group": pl.String, "policy": pl.String, "metric": pl.String, "value": pl.Float64,
                "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Float64}
#: periods with fewer logged rows are not estimated
MIN_PERIOD_ROWS = 50


def missing_row(policy: str, metric: str, estimator: str, kind: str) -> dict[str, Any]:
    """A long-form row for an estimate that could not be computed (NaN numbers; the run's notes say why)."""
    nan = float("nan")
    return {"policy": policy, "metric": metric, "estimator": estimator, "kind": kind, "value": nan, "stderr": nan,
            "ci_low": nan, "ci_high": nan, "n": nan, "ess": nan}


def estimate_rows(policy: str, estimate: Estimate, kind: str) -> list[dict[str, Any]]:
    """One long-form row per metric (the columns of `ESTIMATE_COLUMNS`)."""
    cols = [np.atleast_1d(np.asarray(getattr(estimate, c), dtype=float)) for c in ("value", "stderr", "ci_low", "ci_high", "n")]
    return [
        {"policy": policy, "metric": m, "estimator": estimate.estimator, "kind": kind,
         "value": cols[0][j], "stderr": cols[1][j], "ci_low": cols[2][j], "ci_high": cols[3][j], "n": cols[4][j], "ess": estimate.ess}
        for j, m in enumerate(METRICS)
    ]


def _policy_estimates(
    fb: BanditFeedback, mask: npt.NDArray[np.bool_], probabilities: dict[str, npt.NDArray[np.float64]],
    estimator: BaseEstimator, q_hat: npt.NDArray[np.float64] | None, alpha: float,
) -> Iterator[tuple[str, Estimate]]:
    """Every policy's estimate on the rows of ``mask``; a policy without overlap there is skipped."""
    part = fb.subset(mask)
    for name, pi in probabilities.items():
        try:
            yield name, estimator.estimate(part, target=pi[mask], q_hat=None if q_hat is None else q_hat[mask], alpha=alpha)
        except EstimatorInputError:
            continue  # e.g. no overlap in this group: shown as missing


def time_slices(
    fb: BanditFeedback, dataset: BanditDataset, probabilities: dict[str, npt.NDArray[np.float64]],
    estimator: BaseEstimator, q_hat: npt.NDArray[np.float64] | None, every: str, alpha: float,
) -> pl.DataFrame:
    """Per-period values of every policy (one estimator): service quality is not stationary."""
    period = dataset.logs["ts"].dt.truncate(every)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for start in period.unique().sort().to_list():
            mask = (period == start).to_numpy()
            if mask.sum() < MIN_PERIOD_ROWS:
                continue
            for name, est in _policy_estimates(fb, mask, probabilities, estimator, q_hat, alpha):
                rows += [{"period": start, **row} for row in estimate_rows(name, est, "value")]
    if rows:
        return pl.DataFrame(rows)
    return pl.DataFrame(schema={"period": pl.Datetime("us", "UTC"), **{c: pl.Float64 for c in ESTIMATE_COLUMNS}})


def breakdowns(
    fb: BanditFeedback,
    dataset: BanditDataset,
    probabilities: dict[str, npt.NDArray[np.float64]],
    estimator: BaseEstimator,
    q_hat: npt.NDArray[np.float64] | None,
    alpha: float,
    by: tuple[str, ...] = ("model", "task"),
) -> pl.DataFrame:
    """Value of every policy within each group of each ``by`` column (one estimator)."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for column in by:
            values = dataset.logs[column].cast(pl.String)
            for group, count in values.value_counts(sort=True).iter_rows():
                mask = (values == group).to_numpy()
                rows += group_rows(column, group, count, _policy_estimates(fb, mask, probabilities, estimator, q_hat, alpha))
    return pl.DataFrame(rows, schema=GROUP_SCHEMA)


def group_rows(column: str, group: str, count: int, estimates: Iterable[tuple[str, Estimate]]) -> list[dict[str, Any]]:
    """Rows of one group of the breakdown table: one per policy and metric, or one empty row for a group too small
    to estimate (``estimates`` is then never consumed)."""
    if count < MIN_GROUP_ROWS:
        return [{"by": column, "group": group, "policy": None, "metric": None, "value": None, "ci_low": None,
                 "ci_high": None, "n": float(count)}]
    return [{"by": column, "group": group, "policy": name, "metric": metric, "value": float(est.value[j]),
             "ci_low": float(est.ci_low[j]), "ci_high": float(est.ci_high[j]), "n": float(count)}
            for name, est in estimates for j, metric in enumerate(METRICS)]


def provider_shares(dataset: BanditDataset, probabilities: dict[str, npt.NDArray[np.float64]]) -> pl.DataFrame:
    """Share of (sample-weighted) requests each policy sends to each provider; "logged" is what happened."""
    providers = dataset.catalog.arms_frame["provider"].to_numpy()
    names = sorted(set(providers))
    s = dataset.sample_weight
    logged = np.zeros(dataset.catalog.n_arms)
    np.add.at(logged, dataset.actions, s)
    per_arm = {"logged": logged / s.sum()} | {name: s @ pi / s.sum() for name, pi in probabilities.items()}
    out = {"provider": names}
    for name, share in per_arm.items():
        out[name] = [float(share[providers == p].sum()) for p in names]
    return pl.DataFrame(out)
