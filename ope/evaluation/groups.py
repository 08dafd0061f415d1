"""Per-period and per-group estimates and provider shares of a streamed log, as mergeable sums.

The in-memory `ope.evaluation.breakdown` estimates each period, model and task on its rows; here every batch
adds its rows of each group to that group's partial sums (one `Partial` per group and policy, the
headline estimator, normal intervals), so the tables equal the in-memory ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import BanditFeedback, BaseEstimator, EstimatorInputError, Normal, SparseTarget, SupportWarning
from estimators.base import Partial
from estimators.batch import Batch, Cells
from ope.evaluation.breakdown import ESTIMATE_COLUMNS, GROUP_SCHEMA, MIN_GROUP_ROWS, MIN_PERIOD_ROWS, estimate_rows, group_rows
from ope.data.dataset import BanditDataset

__all__ = ["GroupEstimates", "ShareSums"]

FloatArray = npt.NDArray[np.float64]
BY = ("model", "task")


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
        """The table of `ope.evaluation.breakdown.time_slices`."""
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
        """The table of `ope.evaluation.breakdown.breakdowns` (groups by falling row count, then name)."""
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
    """Sample-weighted traffic per arm, logged and under each policy (`ope.evaluation.breakdown.provider_shares`)."""

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

    def frame(self, ds: BanditDataset) -> pl.DataFrame:
        """The table of provider shares (``ds`` gives the catalog)."""
        providers = ds.catalog.arms_frame["provider"].to_numpy()
        names = sorted(set(providers))
        per_arm = {"logged": self.logged / self.total} | {n: v / self.total for n, v in self.policies.items()}
        out: dict[str, Any] = {"provider": names}
        for name, share in per_arm.items():
            out[name] = [float(share[providers == p].sum()) for p in names]
        return pl.DataFrame(out)
