"""Outcome models for a streamed log: a training sample, features across batches, q̂ batch by batch.

* **Training sample**: a uniform sample of at most ``max_train_rows`` valid rows, the rows with the
  smallest priority hash(row key); it does not depend on how the log is cut into batches, keeps
  log order, and each row keeps its sample weight (the models train weighted, as in memory).
* **Features** are those of `ope.models.features` on each batch, with two things made log-wide: the codes
  of categorical request columns come from the vocabulary of the whole log (`Vocabulary`), and the
  recent-history block comes from `ope.models.history.HistoryWindow`, which carries the last ``history_hours`` of
  rows from batch to batch; its window sums are exact (`ope.models.history`), so every value is bit for
  bit the one computed on the whole log (a log in time order is required).
* **q̂**: the models are cross-fitted on the sample (`ope.models.predictors.fit_outcome_models`), and a
  row of any batch is scored by the fold model of its own fold (row key mod folds), which never saw
  it; with a sample that holds the whole log, every q̂ equals the in-memory one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators.resample import hash_keys
from ope.data.dataset import BanditDataset
from ope.data.schema import REQUIRED_COLUMNS
from ope.models.features import PairFeatures, build_features

__all__ = ["TrainingSample", "Vocabulary", "batch_features"]

FloatArray = npt.NDArray[np.float64]
#: salt that makes sample priorities independent of the cross-fitting folds (both come from the row key)
SAMPLE_SALT = np.uint64(0x5DEECE66D)


class Vocabulary:
    """Sorted distinct values of each categorical request column over the whole (valid) log."""

    def __init__(self) -> None:
        self.values: dict[str, set[str]] = {}

    @staticmethod
    def columns(logs: pl.DataFrame) -> list[str]:
        """String context columns (those `ope.models.features` codes as categories)."""
        skip = (set(REQUIRED_COLUMNS) - {"model", "task"}) | {"sample_weight", "eligible_arms", "request_id"}
        return [c for c, d in logs.schema.items() if c not in skip and (d == pl.String or isinstance(d, (pl.Categorical, pl.Enum)))]

    def add(self, logs: pl.DataFrame) -> None:
        """Collect one batch's values."""
        for column in self.columns(logs):
            self.values.setdefault(column, set()).update(logs[column].cast(pl.String).drop_nulls().unique().to_list())

    def codes(self, column: str, values: pl.Series) -> FloatArray:
        """Codes of ``values`` in the log-wide sorted vocabulary (NaN for null), as `ope.models.features` numbers them."""
        lookup = {v: float(i) for i, v in enumerate(sorted(self.values.get(column, ())))}
        return values.cast(pl.String).replace_strict(lookup, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()


def batch_features(ds: BanditDataset, vocab: Vocabulary, history: FloatArray, window_hours: float) -> PairFeatures:
    """`ope.models.features.build_features` of a batch with log-wide category codes and the streamed history."""
    feats = build_features(ds, window_hours=window_hours, history=history)
    request = feats.request.copy()
    for c in feats.categorical:
        if c < request.shape[1]:
            name = feats.names[c]
            request[:, c] = vocab.codes(name, ds.logs[name])
    return dataclasses.replace(feats, request=request)


class TrainingSample:
    """The ``max_rows`` valid rows with the smallest priority hash(key ^ salt), in log order."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.frames: list[pl.DataFrame] = []
        self.histories: list[FloatArray] = []
        self.rows = 0
        self.threshold = np.uint64(np.iinfo(np.uint64).max)

    def offer(self, ds: BanditDataset, first_row: int, history: FloatArray | None) -> None:
        """Consider a batch's rows (``first_row``: index of its first valid row in the log)."""
        priority = hash_keys(ds.keys ^ SAMPLE_SALT)
        take = priority < self.threshold if self.rows >= self.max_rows else np.ones(ds.n, dtype=bool)
        if not take.any():
            return
        idx = np.flatnonzero(take)
        self.frames.append(ds.logs[idx].with_columns(pl.Series("_row", first_row + idx), pl.Series("_priority", priority[idx])))
        self.histories.append(np.zeros((idx.size, 0, 3)) if history is None else history[idx])
        self.rows += idx.size
        if self.rows > 1.5 * self.max_rows + 1000:
            self._trim()

    def _trim(self) -> None:
        frame = pl.concat(self.frames, how="vertical")
        history = np.concatenate(self.histories)
        if frame.height > self.max_rows:
            keep = np.sort(np.argsort(frame["_priority"].to_numpy(), kind="stable")[: self.max_rows])
            frame, history = frame[keep], history[keep]
            self.threshold = np.uint64(frame["_priority"].max())  # type: ignore[arg-type]
        self.frames, self.histories, self.rows = [frame], [history], frame.height

    def result(self) -> tuple[pl.DataFrame, FloatArray]:
        """The sampled typed rows (log order) and their history block."""
        self._trim()
        return self.frames[0].drop("_row", "_priority"), self.histories[0]
