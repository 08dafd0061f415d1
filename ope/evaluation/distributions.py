"""Off-policy distributions in a run: every policy's CDF of TTFT, latency, cost and throughput, and its quantiles.

The grid of each metric is fixed before pass 2, from the metric's range over every valid row of the
log (`ope.data.facts.DataFacts.ranges`): `POINTS` thresholds log-spaced from its smallest positive
value to its largest, after a threshold at 0 when the log has zeros (failed requests' cost and
throughput). Each batch adds its rows to mergeable sums (`estimators.distribution.CDFSums`, keyed
second moments for the intervals), so a run in memory, streamed or on Ray has the same sums and
the same quantiles. DR uses the distributional outcome models (`ope.models.spread`) for TTFT and latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from estimators import BanditFeedback, EstimatorInputError, SparseTarget
from estimators.distribution import (
    CDF_ESTIMATORS,
    LEVELS,
    CDFSums,
    CrossSums,
    Distribution,
    PolicyRows,
    accumulate_cdfs,
    coarse_index,
    finalize_cdf,
    quantile_difference,
)
from estimators.grid import Grid
from ope.data.dataset import BanditDataset
from ope.data.facts import DISTRIBUTION_METRICS, DataFacts
from ope.data.schema import METRICS
from ope.evaluation.plan import Plan
from ope.models.predictors import OutcomeModels
from ope.models.spread import SPREAD_METRICS, ResidualSpread

__all__ = ["CDF_SCHEMA", "POINTS", "QUANTILE_SCHEMA", "DistributionSpec", "DistributionSums", "distribution_tables",
           "quantile_headline"]

FloatArray = npt.NDArray[np.float64]
#: thresholds per metric
POINTS = 128
#: rows per block (DR holds F̂ of a block's eligible pairs on the grid)
ROWS = 4096
QUANTILE_SCHEMA = {"policy": pl.String, "metric": pl.String, "estimator": pl.String, "kind": pl.String, "quantile": pl.Float64,
                   "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Float64}
CDF_SCHEMA = {"policy": pl.String, "metric": pl.String, "estimator": pl.String, "threshold": pl.Float64, "cdf": pl.Float64,
              "band_low": pl.Float64, "band_high": pl.Float64, "uniform_low": pl.Float64, "uniform_high": pl.Float64}


def quantile_headline(estimators: tuple[str, ...] | list[str]) -> str | None:
    """The estimator quantiles are quoted with: SNIPS (a proper CDF without projection, whose coverage
    docs/experiments/tail_quantiles.md measures), else IPS, else DR; None when none was computed."""
    return next((e for e in ("SNIPS", "IPS", "DR") if e in estimators), None)


@dataclass(frozen=True, slots=True)
class DistributionSpec:
    """What every batch needs to add its rows to the CDF sums: grids, estimators, the baseline, the residual spread."""

    grids: dict[str, Grid]
    estimators: tuple[str, ...]
    baseline: str
    spread: ResidualSpread | None = None
    levels: tuple[float, ...] = LEVELS

    @classmethod
    def of(cls, plan: Plan, facts: DataFacts, models: OutcomeModels | None, training: BanditDataset) -> DistributionSpec | None:
        """The run's spec, or None when ``[evaluation] distributions`` is off or no CDF estimator was asked for."""
        ev = plan.config.evaluation
        names = [e.name for e in plan.estimators]
        estimators = tuple(e for e in CDF_ESTIMATORS if e in names and (e != "DR" or models is not None))
        if not ev.distributions or not estimators:
            return None
        grids = {m: Grid.spanning(low, high, points=POINTS, zero=zero) for m in DISTRIBUTION_METRICS
                 if m in facts.ranges for low, high, zero in [facts.ranges[m]] if high > 0}
        spread = None
        if "DR" in estimators and models is not None:
            spread = ResidualSpread.fit(training, models.q_hat, models.folds >= 0)
        return cls(grids, estimators, plan.baseline, spread)


def _dense(target: SparseTarget, lo: int, hi: int) -> FloatArray:
    """Rows lo … hi − 1 of a target as a dense (m, K) block."""
    cut = np.searchsorted(target.rows, [lo, hi])
    out = np.zeros((hi - lo, target.shape[1]))
    out[target.rows[cut[0]:cut[1]] - lo, target.arms[cut[0]:cut[1]]] = target.values[cut[0]:cut[1]]
    return out


@dataclass
class DistributionSums:
    """The CDF sums of every policy × metric × estimator, added batch by batch."""

    spec: DistributionSpec
    parts: dict[tuple[str, str, str], CDFSums] = field(default_factory=dict)
    cross: dict[tuple[str, str, str], CrossSums] = field(default_factory=dict)

    def add(self, ds: BanditDataset, fb: BanditFeedback, q_hat: FloatArray | None, targets: dict[str, SparseTarget],
            weights: dict[str, FloatArray]) -> None:
        """Add a batch: each policy's target and importance weights ``weights`` (n,), q̂ (n, K, M) or None."""
        with threadpool_limits(limits=1, user_api="blas"):  # small products: BLAS threads only spin on busy cores
            self._add(ds, fb, q_hat, targets, weights)

    def _add(self, ds: BanditDataset, fb: BanditFeedback, q_hat: FloatArray | None, targets: dict[str, SparseTarget],
             weights: dict[str, FloatArray]) -> None:
        spec = self.spec
        dr = "DR" in spec.estimators and q_hat is not None and spec.spread is not None
        baseline = spec.baseline if spec.baseline in weights else None
        for lo in range(0, fb.n, ROWS):
            hi = min(lo + ROWS, fb.n)
            pairs = np.nonzero(ds.eligible[lo:hi]) if dr else None
            pis = {name: _dense(t, lo, hi) for name, t in targets.items()} if dr else {}
            for metric, grid in spec.grids.items():
                f_pairs = None
                if dr and metric in SPREAD_METRICS and q_hat is not None and pairs is not None:
                    f_pairs = self._pair_cdf(metric, grid, q_hat[lo:hi], pairs)
                rows = {}
                for name, w in weights.items():
                    dm = logged = None
                    if f_pairs is not None and pairs is not None:
                        dm, logged = _dr_terms(f_pairs, pairs, pis[name], fb.actions[lo:hi])
                    rows[name] = PolicyRows(w[lo:hi], dm, logged)
                sums, cross = accumulate_cdfs(grid, fb.rewards[lo:hi, METRICS.index(metric)], fb.weights[lo:hi], rows,
                                              estimators=spec.estimators, baseline=baseline)
                _add_into(self.parts, {(name, metric, est): part for (name, est), part in sums.items()})
                _add_into(self.cross, {(name, metric, est): part for (name, est), part in cross.items()})

    def _pair_cdf(self, metric: str, grid: Grid, q_block: FloatArray, pairs: tuple[npt.NDArray[np.int64], ...]) -> FloatArray:
        """F̂(t | x, a) (P, C) of a block's eligible pairs on the coarse thresholds (`coarse_index`: every fourth)."""
        assert self.spec.spread is not None
        rows, arms = pairs
        return self.spec.spread.cdf(metric, q_block[rows, arms, METRICS.index(metric)], arms,
                                    grid.thresholds[coarse_index(grid.size)])

    def merge(self, other: DistributionSums) -> None:
        """Fold another instance's sums into these."""
        _add_into(self.parts, other.parts)
        _add_into(self.cross, other.cross)


def _add_into(into: dict[Any, Any], parts: dict[Any, Any]) -> None:
    """Add each part to the sums of its key."""
    for key, part in parts.items():
        into[key] = into[key] + part if key in into else part


def _dr_terms(f_pairs: FloatArray, pairs: tuple[npt.NDArray[np.int64], ...], pi: FloatArray, actions: npt.NDArray[np.int64]
              ) -> tuple[FloatArray, FloatArray]:
    """Per row of a block: Σ_a π(a|x) F̂(t|x, a) (m, C) and F̂(t|x, a_i) at the logged arm (m, C), on the coarse thresholds."""
    rows, arms = pairs
    m = pi.shape[0]
    dm = csr_matrix((pi[rows, arms], (rows, np.arange(rows.size))), shape=(m, rows.size)) @ f_pairs
    where = np.full(pi.shape, -1)
    where[rows, arms] = np.arange(rows.size)
    return dm, f_pairs[where[np.arange(m), actions]]


def _finalized(spec: DistributionSpec, sums: DistributionSums, names: list[str], alpha: float, notes: list[str]
               ) -> dict[tuple[str, str, str], Distribution]:
    out = {}
    for (name, metric, est), part in sums.parts.items():
        if name not in names:
            continue
        try:
            out[(name, metric, est)] = finalize_cdf(part, spec.grids[metric], estimator=est, alpha=alpha, levels=spec.levels)
        except EstimatorInputError as exc:
            notes.append(f"{name}: the {est} distribution of {metric} cannot be estimated ({exc}).")
    return out


def distribution_tables(spec: DistributionSpec, sums: DistributionSums, names: list[str], baseline: str, alpha: float,
                        notes: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The quantile table (each policy's quantiles and paired differences against the baseline, with intervals) and the
    CDF table (each policy's CDF on the grid with its uniform band), in policy order."""
    done = _finalized(spec, sums, names, alpha, notes)
    quantiles: list[dict[str, Any]] = []
    cdfs: list[dict[str, Any]] = []
    for name in names:
        for metric in spec.grids:
            for est in spec.estimators:
                dist = done.get((name, metric, est))
                if dist is None:
                    continue
                base = {"policy": name, "metric": metric, "estimator": est}
                for k, p in enumerate(dist.levels):
                    quantiles.append(base | {"kind": "value", "quantile": p, "value": dist.quantiles[k], "ci_low": dist.ci_low[k],
                                             "ci_high": dist.ci_high[k], "n": float(dist.rows)})
                ref, cross = done.get((baseline, metric, est)), sums.cross.get((name, metric, est))
                if name != baseline and ref is not None and cross is not None:
                    value, low, high = quantile_difference(dist, ref, cross, alpha)
                    quantiles += [base | {"kind": "difference", "quantile": p, "value": value[k], "ci_low": low[k], "ci_high": high[k],
                                          "n": float(dist.rows)} for k, p in enumerate(dist.levels)]
                columns = {"threshold": dist.grid.thresholds, "cdf": dist.cdf, "band_low": dist.band_low, "band_high": dist.band_high,
                           "uniform_low": dist.uniform_low, "uniform_high": dist.uniform_high}
                cdfs += [base | dict(zip(columns, values, strict=True)) for values in zip(*(c.tolist() for c in columns.values()), strict=True)]
    return pl.DataFrame(quantiles, schema=QUANTILE_SCHEMA), pl.DataFrame(cdfs, schema=CDF_SCHEMA)
