"""Catalog loading, price snapshots, eligibility, and BanditDataset round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.data.catalog import load_catalog
from ope.data.dataset import BanditDataset, derive_outcomes
from ope.data.schema import METRICS
from ope.data.validate import validate_logs
from ope.errors import CatalogError, SchemaError
from tests.conftest import tiny_catalog, tiny_logs


def test_arms_are_sorted_and_prices_follow_snapshots(catalog_file: Path) -> None:
    cat = load_catalog(catalog_file)
    assert cat.arms == ("cheap/m1", "fast/m1", "maker/m1", "maker/m2")
    logs = tiny_logs()
    p_in, p_out = cat.prices_at(logs["ts"])
    cheap = cat.arms.index("cheap/m1")
    hours = np.arange(40)
    np.testing.assert_array_equal(p_in[:, cheap], np.where(hours < 12, 0.2, 0.1))
    np.testing.assert_array_equal(p_out[:, cheap], np.where(hours < 12, 0.4, 0.2))
    assert (p_in[:, cat.arms.index("maker/m1")] == 1.0).all()


def test_eligibility_model_context_capability_and_override(catalog_file: Path) -> None:
    cat = load_catalog(catalog_file)
    logs = pl.DataFrame({
        "model": ["m1", "m1", "m1", "m2", "m1"],
        "input_tokens": [100, 10_000, 100, 100, 100],
        "needs_tools": [False, False, True, False, False],
        "eligible_arms": [None, None, None, None, ["fast/m1"]],
    })
    got = cat.eligible(logs)
    want = np.array([
        [True, True, True, False],     # all m1 arms
        [False, True, True, False],    # too long for cheap (8k)
        [False, True, True, False],    # needs tools: cheap lacks them
        [False, False, False, True],   # m2
        [False, True, False, False],   # explicit override
    ])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.drop("official"), r"missing required columns \['official'\]"),
        (lambda df: df.with_columns(pl.lit("cheap").alias("price_in_per_mtok")), r"'price_in_per_mtok' must be float"),
        (lambda df: df.with_columns(pl.lit(-1.0).alias("price_out_per_mtok")), r"'price_out_per_mtok' must be >= 0"),
        (lambda df: df.with_columns(pl.col("valid_from").first()), r"repeat a valid_from"),
    ],
    ids=["missing column", "text price", "negative price", "duplicate snapshot"],
)
def test_catalog_errors(tmp_path: Path, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "catalog.csv"
    mutate(tiny_catalog()).write_csv(path)
    with pytest.raises(CatalogError, match=match):
        load_catalog(path)


def test_derived_outcomes_by_hand() -> None:
    logs = pl.DataFrame({
        "status": ["ok", "ok", "timeout", "rate_limited"],
        "cost_usd": [0.002, 0.001, 0.0, 0.0],
        "satisfaction": [1.0, None, None, 0.5],
        "ttft_ms": [500.0, 300.0, 60_000.0, 80.0],
        "latency_ms": [2500.0, 12_300.0, 60_000.0, 80.0],
        "output_tokens": [100, 600, 0, 0],
    })
    got = derive_outcomes(logs, sla_latency_ms=10_000)
    want = np.array([
        [0.002, 1, 1.0, 500, 2500, 50.0, 1],
        [0.001, 1, np.nan, 300, 12_300, 50.0, 0],
        [0.0, 0, 0.0, 60_000, 60_000, 0.0, 0],
        [0.0, 0, 0.5, 80, 80, 0.0, 0],
    ])
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == len(METRICS)


def test_dataset_round_trip(tmp_path: Path, catalog_file: Path) -> None:
    logs = tiny_logs()
    path = tmp_path / "logs.parquet"
    logs.write_parquet(path)
    ds = BanditDataset.load(path, catalog_file, sla_latency_ms=10_000)
    assert ds.n == 40
    assert [ds.arms[a] for a in ds.actions] == logs["arm"].to_list()
    np.testing.assert_array_equal(ds.propensities, logs["propensity"].to_numpy())
    np.testing.assert_array_equal(ds.sample_weight, logs["sample_weight"].to_numpy())
    assert ds.eligible[np.arange(ds.n), ds.actions].all()
    fb = ds.to_feedback()
    assert fb.rewards.shape == (40, len(METRICS)) and fb.n_arms == 4
    np.testing.assert_array_equal(fb.keys, ds.keys)
    same = BanditDataset.load(path, catalog_file, sla_latency_ms=10_000)
    np.testing.assert_array_equal(same.keys, ds.keys)
    half = ds.subset(np.arange(40) < 20)
    assert half.n == 20 and half.outcomes.shape == (20, len(METRICS))
    assert "task" in ds.context_columns and "cost_usd" not in ds.context_columns


def test_missing_propensities_are_a_clear_error(catalog_file: Path) -> None:
    logs = tiny_logs().with_columns(pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("propensity")).alias("propensity"))
    cat = load_catalog(catalog_file)
    ds = BanditDataset.from_validated(validate_logs(logs, cat), cat, sla_latency_ms=10_000)
    with pytest.raises(SchemaError, match=r"propensity is null on 3 of 40 rows \(first request_ids \['r000', 'r001', 'r002'\]\)"):
        ds.to_feedback()
