"""Recent history of each arm: error rate, mean log TTFT and mean log tokens/s over a past window.

A request at time t sees, for every arm, the rows served by that arm in ``[t - window, t)``. The
window sums are exact integer arithmetic (log values in fixed point, 2⁻³⁰ resolution), so they do
not depend on which earlier rows the computation started from: the whole log in memory, a
stream of batches carrying the last window, or a distributed task that re-reads the rows of
its own window all produce the same bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.data.dataset import BanditDataset, throughput
from ope.data.schema import Status

__all__ = ["FIXED_POINT", "US_PER_HOUR", "HistoryWindow", "history_block", "row_values"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
US_PER_HOUR = 3_600_000_000
#: fixed-point scale of log TTFT and log tokens/s; a row adds at most ~12·2³⁰, so int64 sums hold 7·10⁸ rows
FIXED_POINT = 2.0**30


def row_values(logs: pl.DataFrame) -> IntArray:
    """(n, 5) int64 per row of validated logs: 1, failed, ok, log TTFT (ok rows, fixed point), log tokens/s (ok rows, fixed point)."""
    ok = (logs["status"] == Status.OK).to_numpy()
    log_ttft = np.log1p(logs["ttft_ms"].cast(pl.Float64).to_numpy())
    log_tps = np.log1p(np.where(ok, logs.select(throughput().cast(pl.Float64)).to_series().to_numpy(), 0.0))
    out = np.zeros((logs.height, 5), dtype=np.int64)
    out[:, 0] = 1
    out[:, 1] = ~ok
    out[:, 2] = ok
    out[ok, 3] = np.rint(log_ttft[ok] * FIXED_POINT)
    out[ok, 4] = np.rint(log_tps[ok] * FIXED_POINT)
    return out


def history_block(ts: IntArray, arms: IntArray, values: IntArray, query_ts: IntArray, n_arms: int,
                  window_us: int, eligible: npt.NDArray[np.bool_]) -> FloatArray:
    """(q, K, 3) history of requests at ``query_ts`` (µs) given context rows (ts, arm, `row_values`).

    The context must hold every row with ts in ``[min(query_ts) - window, max(query_ts))``; rows
    outside that range are ignored. Only the (q, K) ``eligible`` pairs are computed (the models
    never see the others; most arms serve one model, so this is ~K/arms-per-model times less
    work); NaN elsewhere and where the window holds no row (or no ok row) of the arm.
    """
    out = np.full((query_ts.size, n_arms, 3), np.nan)
    order = np.lexsort((ts, arms))
    times, sorted_arms = ts[order], arms[order]
    bounds = np.searchsorted(sorted_arms, np.arange(n_arms + 1), side="left")
    for k in np.flatnonzero(np.diff(bounds)):
        start, stop = bounds[k], bounds[k + 1]
        cum = np.zeros((stop - start + 1, 5), dtype=np.int64)
        np.cumsum(values[order[start:stop]], axis=0, out=cum[1:])
        seg, rows = times[start:stop], np.flatnonzero(eligible[:, k])
        at = query_ts[rows]
        d = cum[np.searchsorted(seg, at, side="left")] - cum[np.searchsorted(seg, at - window_us, side="left")]
        count, oks = d[:, 0], d[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows, k, 0] = np.where(count > 0, d[:, 1] / count, np.nan)
            out[rows, k, 1] = np.where(oks > 0, d[:, 3] / FIXED_POINT / oks, np.nan)
            out[rows, k, 2] = np.where(oks > 0, d[:, 4] / FIXED_POINT / oks, np.nan)
    return out


class HistoryWindow:
    """The one driver of `history_block`: the (n, K, 3) history of consecutive batches of a time-ordered log.

    It carries the rows of the last ``window_hours`` (time, arm and `row_values`) from batch to batch;
    window sums are exact integers, so every value equals the whole log's. The whole log in memory is
    one call; a streamed log, one call per batch; a worker that starts mid-log `preload`s the rows of the
    window before its batch.
    """

    def __init__(self, n_arms: int, window_hours: float) -> None:
        self.n_arms = n_arms
        self.width = int(window_hours * US_PER_HOUR)
        self.ts = np.zeros(0, dtype=np.int64)
        self.arm = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, 5), dtype=np.int64)

    def preload(self, ts: IntArray, arms: IntArray, values: IntArray) -> HistoryWindow:
        """Start from these earlier rows (µs times, arm indices, `row_values`) instead of an empty window."""
        self.ts, self.arm, self.values = ts, arms, values
        return self

    def __call__(self, ds: BanditDataset) -> FloatArray:
        """History features of the batch's rows; then the batch joins the window."""
        ts = ds.logs["ts"].dt.epoch("us").to_numpy()
        all_ts, all_arm = np.concatenate([self.ts, ts]), np.concatenate([self.arm, ds.actions])
        all_values = np.concatenate([self.values, row_values(ds.logs)])
        out = history_block(all_ts, all_arm, all_values, ts, self.n_arms, self.width, ds.eligible)
        keep = all_ts >= all_ts.max() - self.width
        self.ts, self.arm, self.values = all_ts[keep], all_arm[keep], all_values[keep]
        return out

