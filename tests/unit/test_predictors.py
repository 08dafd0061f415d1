"""Outcome and propensity models: leakage-safe features, cross-fitting, structure, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.data.catalog import catalog_from_frame
from ope.data.dataset import BanditDataset
from ope.data.validate import validate_logs
from ope.models.features import build_features
from ope.models.predictors import PredictorConfig, assign_folds, fit_outcome_models
from ope.models.propensity import fit_propensities
from ope.models.serialization import load_models, save_models
from ope.simulate import simulate
from tests.conftest import tiny_catalog, tiny_logs

FAST = PredictorConfig(folds=3, n_estimators=40, learning_rate=0.15, min_child_samples=10)


@pytest.fixture(scope="module")
def sim_ds() -> tuple[BanditDataset, object]:
    sim = simulate(8000, days=2, seed=11)
    return BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000), sim.world


@pytest.fixture(scope="module")
def models(sim_ds):  # type: ignore[no-untyped-def]
    return fit_outcome_models(sim_ds[0], FAST)


def _tiny_dataset(logs: pl.DataFrame) -> BanditDataset:
    cat = catalog_from_frame(tiny_catalog())
    return BanditDataset.from_validated(validate_logs(logs, cat), cat, sla_latency_ms=10_000)


def test_history_uses_only_rows_strictly_before_the_request() -> None:
    logs = tiny_logs(8).with_columns(pl.lit("m1").alias("model"), pl.lit("fast/m1").alias("arm"),
                                    pl.Series("ts", [datetime(2025, 10, 1, tzinfo=UTC) + timedelta(minutes=10 * i) for i in range(8)]))
    logs = logs.with_columns(pl.Series("status", ["ok", "server_error", "ok", "ok", "server_error", "ok", "ok", "ok"]))
    ds = _tiny_dataset(logs)
    hist = build_features(ds, window_hours=1.0).history[:, ds.arms.index("fast/m1"), 0]
    # error rate over the previous rows in the last hour: nothing before row 0; row 2 sees rows 0-1 (1 of 2 failed)
    assert np.isnan(hist[0])
    np.testing.assert_allclose(hist[1:], [0 / 1, 1 / 2, 1 / 3, 1 / 4, 2 / 5, 2 / 6, 2 / 6])


def test_folds_by_key_and_by_time(sim_ds) -> None:  # type: ignore[no-untyped-def]
    ds = sim_ds[0]
    folds = assign_folds(ds, 4)
    assert set(np.unique(folds)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(folds, assign_folds(ds, 4))
    blocked = assign_folds(ds, 4, time_blocked=True)
    ts = ds.logs["ts"].to_numpy()
    for f in range(3):
        assert ts[blocked == f].max() <= ts[blocked == f + 1].min()


def test_out_of_fold_predictions_never_see_their_own_label(sim_ds) -> None:  # type: ignore[no-untyped-def]
    """Pure-noise satisfaction: in-sample fits would track it, out-of-fold predictions cannot."""
    ds, _ = sim_ds
    rng = np.random.default_rng(3)
    noise = rng.random(ds.n)
    j = ds.metrics.index("satisfaction")
    outcomes = ds.outcomes.copy()
    outcomes[:, j] = noise
    noisy = BanditDataset(**{**{f: getattr(ds, f) for f in ds.__dataclass_fields__}, "outcomes": outcomes})
    m = fit_outcome_models(noisy, PredictorConfig(folds=3, n_estimators=60, num_leaves=63, min_child_samples=2))
    oof = m.q_hat[np.arange(ds.n), ds.actions, j]
    assert abs(np.corrcoef(oof, noise)[0, 1]) < 0.05
    in_sample = m.boosters["satisfaction"][0].predict(m.features.pairs(np.arange(ds.n), ds.actions))
    train0 = m.folds != 0
    assert np.corrcoef(in_sample[train0], noise[train0])[0, 1] > 0.2


def test_q_hat_tracks_the_simulators_truth(sim_ds, models) -> None:  # type: ignore[no-untyped-def]
    ds, world = sim_ds
    truth = world.expected_outcomes(10_000)
    for metric, floor in [("cost_usd", 0.97), ("throughput_tps", 0.97), ("ttft_ms", 0.9), ("satisfaction", 0.4), ("sla_hit", 0.6)]:
        j = ds.metrics.index(metric)
        r = np.corrcoef(models.q_hat[:, :, j][ds.eligible], truth[:, :, j][ds.eligible])[0, 1]
        assert r > floor, (metric, r)
    assert (models.q_hat[~ds.eligible] == 0).all()
    assert set(models.quality) >= {"success", "satisfaction", "sla_hit", "log_latency"}
    assert 0.5 < models.quality["sla_hit"]["auc"] <= 1.0
    for name in ("success", "sla_hit", "satisfaction", "log_latency"):   # calibrated in the large (the mean correction)
        assert abs(models.quality[name]["mean_ratio"] - 1) < 0.1, (name, models.quality[name])


def test_cost_is_built_from_prices_and_predicted_output(sim_ds, models) -> None:  # type: ignore[no-untyped-def]
    ds, _ = sim_ds
    j = ds.metrics.index("cost_usd")
    rows, arms = np.nonzero(ds.eligible[:50])
    p_ok = models.q_hat[rows, arms, ds.metrics.index("success")]
    tokens_in = ds.logs["input_tokens"].to_numpy()[rows]
    raw = np.array([
        models.boosters["log_output_tokens"][models.folds[r]].predict(models.features.pairs(np.array([r]), np.array([a])))[0]
        for r, a in zip(rows, arms, strict=True)
    ])
    smear = np.array([models.corrections["log_output_tokens"][models.folds[r]][a] for r, a in zip(rows, arms, strict=True)])
    out_hat = np.exp(raw) * smear - 1
    want = p_ok * (tokens_in * ds.price_in[rows, arms] + out_hat * ds.price_out[rows, arms]) / 1e6 + (1 - p_ok) * models.failed_cost[arms]
    np.testing.assert_allclose(models.q_hat[rows, arms, j], want, rtol=1e-9)


def test_models_round_trip_through_text_files(tmp_path: Path, sim_ds, models) -> None:  # type: ignore[no-untyped-def]
    ds, _ = sim_ds
    save_models(tmp_path, models, None)
    assert not list(tmp_path.glob("*.pkl"))
    boosters, manifest = load_models(tmp_path)
    assert manifest["features"] == list(models.features.names)
    assert manifest["config"]["folds"] == 3
    x = models.features.pairs(np.arange(100), ds.actions[:100])
    for name, fitted in models.boosters.items():
        np.testing.assert_array_equal(boosters[name][1].predict(x), fitted[1].predict(x))


def test_estimated_propensities_match_the_logger(sim_ds) -> None:  # type: ignore[no-untyped-def]
    ds, world = sim_ds
    pm = fit_propensities(ds, FAST)
    assert np.corrcoef(pm.propensities, ds.propensities)[0, 1] > 0.95
    assert abs(pm.diagnostics["uniform_mean_weight"] - 1) < 0.08  # 0.984 with the true propensities here
    assert pm.diagnostics["calibration_error"] < 0.02
    np.testing.assert_allclose(pm.probabilities.sum(axis=1), 1.0)
    assert (pm.probabilities[~ds.eligible] == 0).all()
