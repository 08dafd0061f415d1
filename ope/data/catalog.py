"""The endpoint catalog: one row per arm (and per price snapshot), prices in force, eligibility."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.data.readers import parse_timestamps, read_table
from ope.data.schema import CAPABILITY_PREFIX, CATALOG_COLUMNS, DTYPE_KINDS, NEED_PREFIX
from ope.errors import CatalogError

__all__ = ["Catalog", "load_catalog", "catalog_from_frame"]

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def _cast(frame: pl.DataFrame, column: str, kind: str, source: str) -> pl.Series:
    """Cast one catalog column to its kind, or raise naming the column and the bad arms."""
    col = frame[column]
    if col.dtype in DTYPE_KINDS[kind] and not (kind == "float" and col.dtype == pl.Boolean):
        out = col.cast(pl.Float64) if kind == "float" else col
    elif col.dtype == pl.String:
        if kind == "bool":
            low = col.str.to_lowercase().str.strip_chars()
            out = pl.select(pl.when(low.is_in(list(_TRUE))).then(True).when(low.is_in(list(_FALSE))).then(False)).to_series()
        elif kind == "datetime":
            out = parse_timestamps(col)
        elif kind == "str":
            out = col
        else:
            out = col.str.strip_chars().cast(pl.Float64 if kind == "float" else pl.Int64, strict=False)
    else:
        msg = f"Catalog {source}: column '{column}' must be {kind}. Got {col.dtype}."
        raise CatalogError(msg)
    bad = out.is_null() & (col.is_not_null() if column == "valid_from" else pl.Series([True] * len(col)))
    if bad.any():
        arms = frame["arm"].cast(pl.String).filter(bad).head(5).to_list()
        msg = f"Catalog {source}: column '{column}' must be {kind} on every row; {int(bad.sum())} rows are not (arms {arms})."
        raise CatalogError(msg)
    return out.alias(column)


def _codes(values: pl.Series, names: tuple[str, ...]) -> npt.NDArray[np.int64]:
    """Index of each value in ``names``; -1 for nulls and values not among them."""
    codes = values.cast(pl.String).replace_strict(list(names), list(range(len(names))), default=-1, return_dtype=pl.Int64)
    return codes.fill_null(-1).to_numpy()


@dataclass(frozen=True, slots=True)
class _Tables:
    """A catalog's lookups as arrays: arm and model names, each arm's model code, context and capabilities,
    and the prices (P + 1, K) in force in each period between the sorted snapshot times ``change_us`` (P,)."""

    arms: tuple[str, ...]
    models: tuple[str, ...]
    arm_model: npt.NDArray[np.int64]
    context: npt.NDArray[np.int64]
    supports: dict[str, npt.NDArray[np.bool_]]
    change_us: npt.NDArray[np.int64]
    price_in: npt.NDArray[np.float64]
    price_out: npt.NDArray[np.float64]

    @classmethod
    def of(cls, catalog: Catalog) -> _Tables:
        frame = catalog.arms_frame
        arms = tuple(frame["arm"].cast(pl.String).to_list())
        arm_models = frame["model"].cast(pl.String).to_list()
        models = tuple(sorted(set(arm_models)))
        # a snapshot without valid_from is in force from the epoch (as a backward as-of join filled with 1970-01-01 found it)
        snaps = catalog.prices.with_columns(pl.col("valid_from").dt.epoch("us").fill_null(0).alias("_from"),
                                            pl.col("arm").cast(pl.String)).sort("arm", "_from")
        change_us = np.unique(snaps["_from"].to_numpy())
        starts = np.concatenate([[np.iinfo(np.int64).min], change_us])   # period p starts at starts[p]
        price_in = np.empty((starts.size, len(arms)))
        price_out = np.empty((starts.size, len(arms)))
        by_arm = {key[0]: rows for key, rows in snaps.partition_by("arm", maintain_order=True, as_dict=True).items()}
        for k, arm in enumerate(arms):
            rows = by_arm[arm]
            in_force = np.maximum(np.searchsorted(rows["_from"].to_numpy(), starts, side="right") - 1, 0)
            price_in[:, k] = rows["price_in_per_mtok"].to_numpy()[in_force]
            price_out[:, k] = rows["price_out_per_mtok"].to_numpy()[in_force]
        code = {m: i for i, m in enumerate(models)}
        return cls(
            arms=arms, models=models, arm_model=np.array([code[m] for m in arm_models], dtype=np.int64),
            context=frame["context_tokens"].to_numpy(),
            supports={c: frame[CAPABILITY_PREFIX + c].to_numpy().astype(bool) for c in catalog.capabilities},
            change_us=change_us, price_in=price_in, price_out=price_out,
        )


@dataclass(frozen=True, slots=True)
class Catalog:
    """Arms (sorted; this order is the K axis everywhere), their static attributes and price snapshots.

    ``arms_frame`` has one row per arm (latest snapshot's static attributes); ``prices`` one row per
    arm per snapshot with ``valid_from`` (null = in force from the beginning). Arrays derived from
    them once (price per period between snapshot times, model codes) make the per-batch lookups
    plain numpy.
    """

    arms_frame: pl.DataFrame
    prices: pl.DataFrame
    capabilities: tuple[str, ...]
    _tables: _Tables = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tables", _Tables.of(self))

    @property
    def arms(self) -> tuple[str, ...]:
        """Arm names in K-axis order."""
        return self._tables.arms

    @property
    def n_arms(self) -> int:
        """K."""
        return self.arms_frame.height

    def arm_index(self, arms: pl.Series) -> npt.NDArray[np.int64]:
        """Index of each arm name; -1 for names not in the catalog."""
        return _codes(arms, self._tables.arms)

    def model_codes(self, models: pl.Series) -> npt.NDArray[np.int64]:
        """Index of each model name among the catalog's models (`arm_models` holds each arm's); -1 if unknown."""
        return _codes(models, self._tables.models)

    @property
    def arm_models(self) -> npt.NDArray[np.int64]:
        """(K,) code of each arm's model (`model_codes`)."""
        return self._tables.arm_model

    def prices_at(self, ts: pl.Series) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Input and output USD per million tokens in force at each time, shape (n, K) each.

        The snapshot of each arm in force at ``ts`` is its latest with ``valid_from <= ts`` (its
        first before any). Between two snapshot times of any arm prices are constant, so each row
        takes its period's row of a small table; a batch within one period gets a read-only
        broadcast of that row.
        """
        tables = self._tables
        period = np.searchsorted(tables.change_us, ts.dt.epoch("us").to_numpy(), side="right")
        if period.size and (period == period[0]).all():
            shape = (period.size, self.n_arms)
            return (np.broadcast_to(tables.price_in[period[0]], shape), np.broadcast_to(tables.price_out[period[0]], shape))
        return tables.price_in[period], tables.price_out[period]

    def eligible(self, logs: pl.DataFrame) -> npt.NDArray[np.bool_]:
        """(n, K) mask: the arm serves the request's model, its context fits, it supports what is needed.

        A list column ``eligible_arms`` in the logs, where not null, overrides the rule for that row.
        """
        mask = self._rule(logs, np.arange(self.n_arms)[None, :])
        listed = self._listed(logs)
        if listed is not None:
            given, rows, arms = listed
            override = np.zeros_like(mask)
            override[rows, arms] = True
            mask[given] = override[given]
        return mask

    def eligible_for(self, logs: pl.DataFrame, arms: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """(n,) ``eligible(logs)[i, arms[i]]`` without the (n, K) mask; False where ``arms`` is -1."""
        known = arms >= 0
        ok = self._rule(logs, np.where(known, arms, 0)) & known
        listed = self._listed(logs)
        if listed is not None:
            given, rows, listed_arms = listed
            hit = np.zeros_like(ok)
            hit[rows[listed_arms == arms[rows]]] = True
            ok[given] = hit[given] & known[given]
        return ok

    def _rule(self, logs: pl.DataFrame, arms: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """The model / context / capability rule at ``arms``: (1, K) for every arm, or (n,) one arm per row."""
        tables = self._tables
        row = (slice(None), None) if arms.ndim == 2 else (slice(None),)
        mask = tables.arm_model[arms] == self.model_codes(logs["model"])[row]
        mask &= logs["input_tokens"].to_numpy()[row] <= tables.context[arms]
        for cap in self.capabilities:
            need = NEED_PREFIX + cap
            if need in logs.columns:
                needs = logs[need].fill_null(False).to_numpy().astype(bool)
                mask &= ~needs[row] | tables.supports[cap][arms]
        return mask

    def _listed(self, logs: pl.DataFrame) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """Rows whose ``eligible_arms`` is given, and the (row, arm) pairs they list (known arms only)."""
        if "eligible_arms" not in logs.columns:
            return None
        listed = logs["eligible_arms"]
        given = listed.is_not_null().to_numpy()
        if not given.any():
            return None
        exploded = pl.DataFrame({"_row": np.arange(logs.height), "arm": listed}).filter(pl.col("arm").is_not_null())
        exploded = exploded.explode("arm").drop_nulls("arm")
        idx = self.arm_index(exploded["arm"])
        known = idx >= 0
        return given, exploded["_row"].to_numpy()[known], idx[known]

    def official_arms(self) -> dict[str, list[int]]:
        """model → indices of its official (maker's own) arms."""
        out: dict[str, list[int]] = {}
        for k, row in enumerate(self.arms_frame.iter_rows(named=True)):
            if row["official"]:
                out.setdefault(row["model"], []).append(k)
        return out


def load_catalog(path: str | Path) -> Catalog:
    """Load and check a catalog file (CSV or parquet); errors name the column and the arms."""
    return catalog_from_frame(read_table(path), source=str(path))


def catalog_from_frame(frame: pl.DataFrame, *, source: str = "catalog") -> Catalog:
    """Check a catalog table already in memory (e.g. from the simulator)."""
    if frame.height == 0:
        raise CatalogError(f"Catalog {source} has no rows.")
    missing = [c for c in CATALOG_COLUMNS if c not in frame.columns]
    if missing:
        raise CatalogError(f"Catalog {source} is missing required columns {missing}.")
    caps = tuple(sorted(c.removeprefix(CAPABILITY_PREFIX) for c in frame.columns if c.startswith(CAPABILITY_PREFIX)))
    cols = [_cast(frame, c, kind, source) for c, kind in CATALOG_COLUMNS.items()]
    cols += [_cast(frame, CAPABILITY_PREFIX + c, "bool", source) for c in caps]
    if "valid_from" in frame.columns:
        cols.append(_cast(frame, "valid_from", "datetime", source))
    else:
        cols.append(pl.Series("valid_from", [None] * frame.height, dtype=pl.Datetime("us", "UTC")))
    table = pl.DataFrame(cols)
    for column in ("price_in_per_mtok", "price_out_per_mtok", "context_tokens"):
        bad = table.filter(pl.col(column) < 0)
        if bad.height:
            raise CatalogError(f"Catalog {source}: '{column}' must be >= 0; arms {bad['arm'].head(5).to_list()} are not.")
    dup = table.filter(pl.struct("arm", "valid_from").is_duplicated())
    if dup.height:
        raise CatalogError(f"Catalog {source}: arms {dup['arm'].unique().head(5).to_list()} repeat a valid_from.")
    static = [c for c in table.columns if c not in ("price_in_per_mtok", "price_out_per_mtok", "valid_from")]
    latest = table.sort("valid_from", nulls_last=False).group_by("arm", maintain_order=True).last()
    clash = table.select(static).unique().group_by("arm").len().filter(pl.col("len") > 1)
    if clash.height:
        msg = f"Catalog {source}: arms {clash['arm'].head(5).to_list()} change provider, model, context or capabilities between snapshots."
        raise CatalogError(msg)
    arms_frame = latest.sort("arm")
    prices = table.select("arm", "valid_from", "price_in_per_mtok", "price_out_per_mtok")
    return Catalog(arms_frame=arms_frame, prices=prices, capabilities=caps)
