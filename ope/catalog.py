"""The endpoint catalog: one row per arm (and per price snapshot), prices in force, eligibility."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.errors import CatalogError
from ope.readers import parse_timestamps, read_table
from ope.schema import CAPABILITY_PREFIX, CATALOG_COLUMNS, DTYPE_KINDS, NEED_PREFIX

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


@dataclass(frozen=True, slots=True)
class Catalog:
    """Arms (sorted; this order is the K axis everywhere), their static attributes and price snapshots.

    ``arms_frame`` has one row per arm (latest snapshot's static attributes); ``prices`` one row per
    arm per snapshot with ``valid_from`` (null = in force from the beginning).
    """

    arms_frame: pl.DataFrame
    prices: pl.DataFrame
    capabilities: tuple[str, ...]

    @property
    def arms(self) -> tuple[str, ...]:
        """Arm names in K-axis order."""
        return tuple(self.arms_frame["arm"].to_list())

    @property
    def n_arms(self) -> int:
        """K."""
        return self.arms_frame.height

    def arm_index(self, arms: pl.Series) -> npt.NDArray[np.int64]:
        """Index of each arm name; -1 for names not in the catalog."""
        lookup = pl.DataFrame({"arm": self.arms, "_k": np.arange(self.n_arms)})
        joined = pl.DataFrame({"arm": arms.cast(pl.String)}).join(lookup, on="arm", how="left", maintain_order="left")
        return joined["_k"].fill_null(-1).to_numpy().astype(np.int64)

    def prices_at(self, ts: pl.Series) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Input and output USD per million tokens in force at each time, shape (n, K) each."""
        n = len(ts)
        p_in = np.empty((n, self.n_arms))
        p_out = np.empty((n, self.n_arms))
        order = pl.DataFrame({"ts": ts, "_row": np.arange(n)}).sort("ts")
        for k, arm in enumerate(self.arms):
            snaps = self.prices.filter(pl.col("arm") == arm).sort("valid_from", nulls_last=False)
            snaps = snaps.with_columns(pl.col("valid_from").fill_null(pl.datetime(1970, 1, 1, time_zone="UTC")))
            joined = order.join_asof(snaps.select("valid_from", "price_in_per_mtok", "price_out_per_mtok"),
                                     left_on="ts", right_on="valid_from", strategy="backward")
            joined = joined.with_columns(
                pl.col("price_in_per_mtok").fill_null(snaps["price_in_per_mtok"][0]),
                pl.col("price_out_per_mtok").fill_null(snaps["price_out_per_mtok"][0]),
            )
            rows = joined["_row"].to_numpy()
            p_in[rows, k] = joined["price_in_per_mtok"].to_numpy()
            p_out[rows, k] = joined["price_out_per_mtok"].to_numpy()
        return p_in, p_out

    def eligible(self, logs: pl.DataFrame) -> npt.NDArray[np.bool_]:
        """(n, K) mask: the arm serves the request's model, its context fits, it supports what is needed.

        A list column ``eligible_arms`` in the logs, where not null, overrides the rule for that row.
        """
        arms = self.arms_frame
        mask = logs["model"].cast(pl.String).to_numpy()[:, None] == arms["model"].to_numpy()[None, :]
        mask &= logs["input_tokens"].to_numpy()[:, None] <= arms["context_tokens"].to_numpy()[None, :]
        for cap in self.capabilities:
            need = NEED_PREFIX + cap
            if need in logs.columns:
                needs = logs[need].fill_null(False).to_numpy().astype(bool)
                mask &= ~needs[:, None] | arms[CAPABILITY_PREFIX + cap].to_numpy()[None, :]
        if "eligible_arms" in logs.columns:
            listed = logs["eligible_arms"]
            given = listed.is_not_null().to_numpy()
            if given.any():
                exploded = pl.DataFrame({"_row": np.arange(logs.height), "arm": listed}).filter(pl.col("arm").is_not_null())
                exploded = exploded.explode("arm").drop_nulls("arm")
                idx = self.arm_index(exploded["arm"])
                known = idx >= 0
                override = np.zeros_like(mask)
                override[exploded["_row"].to_numpy()[known], idx[known]] = True
                mask[given] = override[given]
        return mask

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
