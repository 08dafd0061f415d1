"""Features of (request, arm) pairs for the outcome and propensity models.

Request context (model, task, input tokens, hour, weekday, extra log columns), arm attributes
(provider, prices in force, context limit, official flag, capabilities) and leakage-safe recent
history per arm: error rate, TTFT and tokens/s over a past window, from rows strictly before the
request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.data.dataset import BanditDataset
from ope.data.schema import CAPABILITY_PREFIX
from ope.models.history import HistoryWindow

__all__ = ["PairFeatures", "build_features"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PairFeatures:
    """Feature blocks; `pairs(rows, arms)` assembles the matrix for any (row, arm) pairs.

    request (n, R) · arm (K, A) · price_in / price_out (n, K) · history (n, K, H).
    ``names`` lists the columns of the assembled matrix, ``categorical`` their categorical indices.
    """

    request: FloatArray
    arm: FloatArray
    price_in: FloatArray
    price_out: FloatArray
    history: FloatArray
    names: tuple[str, ...]
    categorical: tuple[int, ...]

    @classmethod
    def names_only(cls, names: tuple[str, ...], categorical: tuple[int, ...]) -> PairFeatures:
        """Blocks of no rows: what fitted models keep of their training features (the column names)."""
        empty = np.zeros((0, 0))
        return cls(empty, empty, empty, empty, np.zeros((0, 0, 0)), tuple(names), tuple(categorical))

    def empty(self) -> PairFeatures:
        """These features without their rows (`names_only`)."""
        return PairFeatures.names_only(self.names, self.categorical)

    def pairs(self, rows: npt.NDArray[np.int64], arms: npt.NDArray[np.int64]) -> FloatArray:
        """Feature matrix (P, F) for the pairs (rows[p], arms[p]).

        Filled block by block into one C-ordered array: 3–4× faster than concatenating the blocks
        (measured on 8·10⁶ pairs: 1.6 s instead of 4.4–7.4 s).
        """
        r, a = self.request.shape[1], self.arm.shape[1]
        out = np.empty((rows.size, len(self.names)))
        out[:, :r] = self.request[rows]
        out[:, r:r + a] = self.arm[arms]
        np.log1p(self.price_in[rows, arms], out=out[:, r + a])
        np.log1p(self.price_out[rows, arms], out=out[:, r + a + 1])
        out[:, r + a + 2:] = self.history[rows, arms]
        return out


def _codes(values: pl.Series) -> FloatArray:
    """Integer codes (as floats) of a string column, in sorted order of its values; null → NaN."""
    cats = values.cast(pl.String)
    uniq = sorted(v for v in cats.unique().to_list() if v is not None)
    lookup = {v: float(i) for i, v in enumerate(uniq)}
    return cats.replace_strict(lookup, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()


def _request_block(ds: BanditDataset) -> tuple[FloatArray, list[str], list[int]]:
    logs = ds.logs
    cols: list[FloatArray] = [_codes(logs["model"]), _codes(logs["task"]),
                              np.log1p(logs["input_tokens"].to_numpy().astype(np.float64))]
    names, cat = ["model", "task", "log_input_tokens"], [0, 1]
    ts = logs["ts"]
    cols += [ts.dt.hour().to_numpy() + ts.dt.minute().to_numpy() / 60.0, ts.dt.weekday().to_numpy().astype(np.float64)]
    names += ["hour", "weekday"]
    for column in ds.context_columns:
        if column in ("model", "task", "input_tokens", "ts"):
            continue
        series = logs[column]
        if series.dtype == pl.String or isinstance(series.dtype, (pl.Categorical, pl.Enum)):
            cat.append(len(cols))
            cols.append(_codes(series))
        elif series.dtype.is_numeric() or series.dtype == pl.Boolean:
            cols.append(series.cast(pl.Float64).fill_null(np.nan).to_numpy())
        else:
            continue
        names.append(column)
    return np.column_stack(cols), names, cat


def _arm_block(ds: BanditDataset) -> tuple[FloatArray, list[str]]:
    arms = ds.catalog.arms_frame
    cols = [_codes(arms["arm"]), _codes(arms["provider"]), arms["official"].cast(pl.Float64).to_numpy(),
            np.log(arms["context_tokens"].cast(pl.Float64).to_numpy() + 1)]
    names = ["arm", "provider", "official", "log_context_tokens"]
    for cap in ds.catalog.capabilities:
        cols.append(arms[CAPABILITY_PREFIX + cap].cast(pl.Float64).to_numpy())
        names.append(CAPABILITY_PREFIX + cap)
    return np.column_stack(cols), names


def build_features(ds: BanditDataset, *, window_hours: float = 6.0, history: FloatArray | None = None) -> PairFeatures:
    """All feature blocks of a dataset; ``history`` (n, K, 3) gives the recent-history block ready-made (streaming)."""
    request, r_names, r_cat = _request_block(ds)
    arm, a_names = _arm_block(ds)
    names = r_names + a_names + ["log_price_in", "log_price_out", "recent_error_rate", "recent_log_ttft", "recent_log_tps"]
    categorical = r_cat + [len(r_names), len(r_names) + 1]
    return PairFeatures(request, arm, ds.price_in, ds.price_out,
                        HistoryWindow(ds.catalog.n_arms, window_hours)(ds) if history is None else history, tuple(names), tuple(categorical))
