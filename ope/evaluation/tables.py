"""Every table a run shows, built from mergeable sums: the estimates in long form, per-period and
per-group estimates, and provider shares.

A batch adds its rows of each period, model and task to that group's partial sums (one `Partial`
per group and policy, the headline estimator, normal intervals); a run of one batch (the whole log
in memory) and a run of many (streamed, on Ray) build the same tables from the same sums.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import (
    BanditFeedback,
    BaseEstimator,
    Estimate,
    EstimatorInputError,
    Normal,
    SparseTarget,
    SupportWarning,
)
from estimators.base import Partial
from estimators.batch import Batch, Cells
from ope.data.catalog import Catalog
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.evaluation.plan import Plan

__all__ = ["ESTIMATE_COLUMNS", "ESTIMATE_SCHEMA", "GROUP_SCHEMA", "MIN_GROUP_ROWS", "MIN_PERIOD_ROWS", "GroupEstimates", "ShareSums",
           "blank_metric", "estimate_rows", "estimate_table", "group_rows", "missing_row"]

FloatArray = npt.NDArray[np.float64]
BY = ("model", "task")
ESTIMATE_COLUMNS = ["policy", "metric", "estimator", "kind", "value", "stderr", "ci_low", "ci_high", "n", "ess"]
ESTIMATE_SCHEMA = {c: (pl.String if c in ("policy", "metric", "estimator", "kind") else pl.Float64) for c in ESTIMATE_COLUMNS}
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


def group_rows(column: str, group: str, count: int, estimates: Iterable[tuple[str, Estimate]]) -> list[dict[str, Any]]:
    """Rows of one group of the breakdown table: one per policy and metric, or one empty row for a group too small
    to estimate (``estimates`` is then never consumed)."""
    if count < MIN_GROUP_ROWS:
        return [{"by": column, "group": group, "policy": None, "metric": None, "value": None, "ci_low": None,
                 "ci_high": None, "n": float(count)}]
    return [{"by": column, "group": group, "policy": name, "metric": metric, "value": float(est.value[j]),
             "ci_low": float(est.ci_low[j]), "ci_high": float(est.ci_high[j]), "n": float(count)}
            for name, est in estimates for j, metric in enumerate(METRICS)]



class GroupEstimates:
    """Partial sums of one estimator per period (``time_slice``), model and task, and policy."""

    def __init__(self, estimator: BaseEstimator, every: str, alpha: float) -> None:
        self.estimator, self.every, self.alpha = estimator, every, alpha
        self.parts: dict[tuple[str, Any, str], Partial] = {}
        self.observed: dict[tuple[str, Any], FloatArray] = {}
        self.counts: dict[tuple[str, Any], int] = {}

    def add(self, ds: BanditDataset, fb: BanditFeedback, probabilities: dict[str, SparseTarget], batches: dict[str, Batch]) -> None:
        """Add one batch's rows of every group (``batches``: each policy prepared on the batch, without a baseline).

        Rows are sorted once into period × model × task cells (`estimators.batch.Cells`); each policy's
        sums are reduced per cell and the cells added into every group they belong to
        (`BaseEstimator.accumulate_groups`): the same sums as preparing each group alone.
        """
        if ds.n == 0:
            return
        keys, cells = self._cells(ds)
        size = cells.add(np.diff(cells.bounds, append=ds.n).astype(np.float64))
        observed = cells.add(np.add.reduceat((fb.weights[:, None] * ~np.isnan(fb.rewards))[cells.order], cells.bounds, axis=0).T)
        for g, key in enumerate(keys):
            self.counts[key] = self.counts.get(key, 0) + int(size[g])
            self.observed[key] = self.observed.get(key, 0.0) + observed[:, g]
        for name, pi in probabilities.items():
            for (by, group), part in zip(keys, self.estimator.accumulate_groups(batches[name], pi, cells), strict=True):
                self.parts[(by, group, name)] = self.parts[(by, group, name)] + part if (by, group, name) in self.parts else part

    def _cells(self, ds: BanditDataset) -> tuple[list[tuple[str, Any]], Cells]:
        """Every (column, value) group of the batch, in order, and the rows' cells (groups numbered in that order)."""
        columns = {"period": ds.logs["ts"].dt.truncate(self.every), **{c: ds.logs[c].cast(pl.String) for c in BY}}
        keys: list[tuple[str, Any]] = []
        codes = []
        for by, values in columns.items():
            groups = values.unique().sort()
            codes.append(groups.search_sorted(values).to_numpy().astype(np.int64) + len(keys))  # dense rank, faster on strings
            keys += [(by, group) for group in groups.to_list()]
        return keys, Cells.of(np.stack(codes))

    def merge(self, other: GroupEstimates) -> None:
        """Fold another instance's sums into these (e.g. one per worker, merged on the driver)."""
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
            self.observed[key] = self.observed.get(key, 0.0) + other.observed[key]
        for key, part in other.parts.items():
            self.parts[key] = self.parts[key] + part if key in self.parts else part

    def _estimates(self, by: str, group: Any, names: list[str]) -> list[tuple[str, Any]]:
        if (self.observed[(by, group)] <= 0).any():
            return []  # as in memory: a group where a metric is never observed is not estimated
        out = []
        for name in names:
            try:
                out.append((name, self.estimator.finalize(self.parts[(by, group, name)], inference=Normal(), alpha=self.alpha)))
            except EstimatorInputError:
                continue
        return out

    def slices(self, names: list[str]) -> pl.DataFrame:
        """The table of per-period estimates."""
        rows = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SupportWarning)
            for start in sorted(g for by, g in self.counts if by == "period"):
                if self.counts[("period", start)] < MIN_PERIOD_ROWS:
                    continue
                for name, est in self._estimates("period", start, names):
                    rows += [{"period": start, **row} for row in estimate_rows(name, est, "value")]
        if rows:
            return pl.DataFrame(rows)
        return pl.DataFrame(schema={"period": pl.Datetime("us", "UTC"), **{c: pl.Float64 for c in ESTIMATE_COLUMNS}})

    def breakdowns(self, names: list[str]) -> pl.DataFrame:
        """The table of per-model and per-task estimates (groups by falling row count, then name)."""
        rows: list[dict[str, Any]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SupportWarning)
            for column in BY:
                groups = sorted(((g, c) for (by, g), c in self.counts.items() if by == column), key=lambda gc: (-gc[1], gc[0]))
                for group, count in groups:
                    estimates = self._estimates(column, group, names) if count >= MIN_GROUP_ROWS else []
                    rows += group_rows(column, group, count, estimates)
        return pl.DataFrame(rows, schema=GROUP_SCHEMA)


class ShareSums:
    """Sample-weighted traffic per arm, logged and under each policy ."""

    def __init__(self, n_arms: int, names: list[str]) -> None:
        self.total = 0.0
        self.logged = np.zeros(n_arms)
        self.policies = {name: np.zeros(n_arms) for name in names}

    def add(self, ds: BanditDataset, probabilities: dict[str, SparseTarget]) -> None:
        """Add one batch."""
        s = ds.sample_weight
        self.total += float(s.sum())
        self.logged += np.bincount(ds.actions, weights=s, minlength=self.logged.size)
        for name, pi in probabilities.items():
            self.policies[name] += pi.mass(s)

    def merge(self, other: ShareSums) -> None:
        """Fold another instance's sums into these."""
        self.total += other.total
        self.logged += other.logged
        for name, mass in other.policies.items():
            self.policies[name] = self.policies[name] + mass if name in self.policies else mass.copy()

    def frame(self, catalog: Catalog) -> pl.DataFrame:
        """The table of provider shares."""
        providers = catalog.arms_frame["provider"].to_numpy()
        names = sorted(set(providers))
        per_arm = {"logged": self.logged / self.total} | {n: v / self.total for n, v in self.policies.items()}
        out: dict[str, Any] = {"provider": names}
        for name, share in per_arm.items():
            out[name] = [float(share[providers == p].sum()) for p in names]
        return pl.DataFrame(out)


def blank_metric(frame: pl.DataFrame, metric: str) -> pl.DataFrame:
    """The frame with every number of ``metric`` set to NaN (a metric the log cannot speak to)."""
    if "metric" not in frame.columns or frame.height == 0:
        return frame
    numbers = [c for c in ("value", "stderr", "ci_low", "ci_high") if c in frame.columns]
    return frame.with_columns(pl.when(pl.col("metric") == metric).then(float("nan")).otherwise(pl.col(c)).alias(c) for c in numbers)


def estimate_table(plan: Plan, parts: dict[tuple[str, str], Partial], failed: dict[tuple[str, str], str], names: list[str],
                   notes: list[str]) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """Every policy × estimator × kind finalized from the merged ``parts`` (long form), and each estimate's diagnostics.

    An estimate that cannot be computed (``failed``, or refused when finalized) is a row of NaNs and a note saying why.
    """
    rows: list[dict[str, Any]] = []
    diagnostics: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)  # they are kept in the diagnostics and the report
        for name in names:
            kinds = ("value", "difference", "relative") if name != plan.baseline else ("value",)
            for est in plan.estimators:
                try:
                    if (name, est.name) in failed:
                        raise EstimatorInputError(failed[(name, est.name)])
                    part = parts[(name, est.name)]
                    done = {k: est.finalize(part, inference=plan.inference, alpha=plan.alpha, kind=k) for k in kinds}
                except EstimatorInputError as exc:  # e.g. a policy that never overlaps the log: say so, keep the rest
                    notes.append(f"{name}: {est.name} cannot estimate it on this log ({exc}).")
                    rows += [missing_row(name, m, est.name, k) for k in kinds for m in METRICS]
                    continue
                diagnostics.setdefault(name, {})[est.name] = done["value"].diagnostics.to_dict()
                rows += [r for k, e in done.items() for r in estimate_rows(name, e, k)]
    return pl.DataFrame(rows, schema=ESTIMATE_SCHEMA), diagnostics
