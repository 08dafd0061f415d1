"""`ope run --engine ray` on a local Ray cluster gives every number of the single-machine run.

Ray is an optional extra, but part of the dev install, so these tests always run: a missing Ray
is a failure, not a skip.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.cli import main
from ope.config import ExperimentConfig, PolicyConfig, load_config
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError, OPEError
from ope.evaluation.registry import build_policy
from ope.evaluation.run import RunResult, run_experiment
from ope.models.features import build_features
from ope.models.history import US_PER_HOUR, history_block, row_values
from ope.models.predictors import PredictorConfig, fit_outcome_models, predict_q_hat
from ope.models.serialization import models_from_text, models_to_text
from ope.report.outputs import write_outputs
from ope.simulate import write_partitioned
from policies.base import policy_from_json, policy_to_json
from tests.integration.test_streaming import CONSTRAINED, HEURISTIC, _assert_same_frame, _config, _without_propensities

pytestmark = pytest.mark.slow  # a Ray cluster per test: run in CI, skipped by -m "not slow"

ROWS = 4_000


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs for this module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A simulated log as four time-ordered parquet files, and its catalog."""
    return write_partitioned(tmp_path_factory.mktemp("sim"), rows=ROWS, days=2, seed=11, partition_rows=ROWS // 4)


def _engine(cfg: ExperimentConfig, engine: str) -> ExperimentConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, streaming=True, engine=engine))


def _both(cfg: ExperimentConfig, out: Path) -> tuple[RunResult, RunResult]:
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for engine in ("local", "ray"):
            result = run_experiment(_engine(cfg, engine), show_progress=False)
            write_outputs(result, out, engine)
            results.append(result)
    return results[0], results[1]


def test_ray_run_equals_the_single_machine_run(ray_cluster: None, partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    """All 7 estimators, outcome models with history features, a constrained router; batches of 600 rows."""
    logs, catalog = partitioned
    estimators = ["IPS", "SNIPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"]
    cfg = load_config(_config(tmp_path, logs, catalog, estimators=estimators, policies=HEURISTIC + CONSTRAINED, batch=600))
    local, on_ray = _both(cfg, tmp_path)
    _assert_same_frame(local.estimates, on_ray.estimates, ["policy", "metric", "estimator", "kind"])
    _assert_same_frame(local.slices, on_ray.slices, ["period", "policy", "metric"])
    _assert_same_frame(local.breakdowns, on_ray.breakdowns, ["by", "group", "policy", "metric"])
    _assert_same_frame(local.shares, on_ray.shares, ["provider"])
    _assert_same_frame(local.quantiles, on_ray.quantiles, ["policy", "metric", "estimator", "kind", "quantile"])
    _assert_same_frame(local.cdfs, on_ray.cdfs, ["policy", "metric", "estimator", "threshold"])
    assert local.quantiles.filter(pl.col("estimator") == "DR")["value"].is_finite().all()
    for policy, shares in local.weight_shares.items():
        assert on_ray.weight_shares[policy] == pytest.approx(shares, rel=1e-12, abs=1e-15)
    assert local.estimates.filter(pl.col("estimator") == "DR")["value"].is_finite().all()
    for file in sorted((tmp_path / "local" / "actions").iterdir()):
        assert pl.read_parquet(file).equals(pl.read_parquet(tmp_path / "ray" / "actions" / file.name)), file.name
    a, b = (json.loads((tmp_path / e / "summary.json").read_text()) for e in ("local", "ray"))
    assert (a["data"].pop("streamed")["engine"], b["data"].pop("streamed")["engine"]) == ("local", "ray")
    assert a["data"] == b["data"] and a["warnings"] == b["warnings"]


def test_ope_run_engine_ray_from_the_command_line(ray_cluster: None, partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    config = _config(tmp_path, logs, catalog, estimators=["IPS", "SNIPS"], batch=1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(config), "--engine", "ray", "--out", str(tmp_path), "--run-name", "r", "--quiet"]) == 0
        local = run_experiment(_engine(load_config(config), "local"), show_progress=False)
    _assert_same_frame(local.estimates, pl.read_csv(tmp_path / "r" / "estimates.csv"), ["policy", "metric", "estimator", "kind"])


def test_unknown_engine_is_refused(tmp_path: Path, partitioned: tuple[Path, Path]) -> None:
    logs, catalog = partitioned
    config = _config(tmp_path, logs, catalog, estimators=["IPS"])
    config.write_text(config.read_text().replace("[evaluation]", 'engine = "spark"\n[evaluation]'))
    with pytest.raises(ConfigError, match="engine must be 'auto', 'memory', 'local' or 'ray'"):
        load_config(config)


def test_history_of_a_slice_from_its_own_window_equals_the_whole_log(partitioned: tuple[Path, Path]) -> None:
    """What a Ray task does: re-read only the rows of [first - window, last) and get the same bits."""
    logs, catalog = partitioned
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    whole = build_features(ds, window_hours=6.0).history
    ts, width = ds.logs["ts"].dt.epoch("us").to_numpy(), 6 * US_PER_HOUR
    values = row_values(ds.logs)
    rows = np.arange(2_000, 2_600)
    window = (ts >= ts[rows].min() - width) & (ts < ts[rows].max())
    got = history_block(ts[window], ds.actions[window], values[window], ts[rows], ds.catalog.n_arms, width, ds.eligible[rows])
    np.testing.assert_array_equal(got, whole[rows])


def test_policies_and_models_travel_as_text_and_predict_identically(partitioned: tuple[Path, Path]) -> None:
    logs, catalog = partitioned
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    models = fit_outcome_models(ds, PredictorConfig(folds=2, n_estimators=10, num_leaves=7))
    feats = build_features(ds, window_hours=6.0)
    copy, _ = models_from_text(models_to_text(models, None))
    np.testing.assert_array_equal(predict_q_hat(copy, ds, feats), predict_q_hat(models, ds, feats))
    specs = [PolicyConfig(name="d", kind="direct_official", params={"fallback": "cheapest"}), PolicyConfig(name="c", kind="cheapest", params={"epsilon": 0.05}),
             PolicyConfig(name="f", kind="fastest", params={}), PolicyConfig(name="p", kind="price_weighted", params={}),
             PolicyConfig(name="r", kind="constrained", params={"objective": "cost", "min_sla_hit": 0.3, "exploration": 0.05})]
    for spec in specs:
        policy = build_policy(spec)
        args = (ds, models.q_hat)
        policy.fit(*args)
        copy_policy = policy_from_json(policy_to_json(policy))
        assert copy_policy.name == spec.name
        np.testing.assert_array_equal(copy_policy.action_probabilities(*args), policy.action_probabilities(*args))


def test_only_policy_classes_are_rebuilt_from_text() -> None:
    with pytest.raises(ValueError, match="Refusing to rebuild"):
        policy_from_json(json.dumps({"class": "os:system", "settings": {}, "fitted": {}}))


def test_the_core_does_not_import_ray() -> None:
    code = "import sys, ope.cli, ope.evaluation.run, ope.evaluation.engines.local, ope.report.outputs, ope.evaluation.tune; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_ray_refuses_repeated_request_ids(ray_cluster: None, partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    """Which copy of a repeated id is the duplicate depends on log order, which Ray batches do not follow."""
    logs, catalog = partitioned
    folder = tmp_path / "logs"
    folder.mkdir()
    files = sorted(logs.glob("*.parquet"))
    first = pl.read_parquet(files[0])["request_id"][0]
    for i, file in enumerate(files):
        frame = pl.read_parquet(file)
        if i == 2:
            frame = frame.with_columns(pl.when(pl.int_range(frame.height) == 0).then(pl.lit(first)).otherwise(pl.col("request_id"))
                                       .alias("request_id"))
        frame.write_parquet(folder / file.name)
    cfg = load_config(_config(tmp_path, folder, catalog, estimators=["IPS"]))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, quarantine=tmp_path / "bad.parquet"))
    with pytest.raises(OPEError, match="needs unique request_ids"):
        run_experiment(_engine(cfg, "ray"), show_progress=False)


def test_ray_run_with_estimated_propensities_equals_the_single_machine_run(ray_cluster: None, partitioned: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    logs, catalog = partitioned
    bare = _without_propensities(logs, tmp_path / "bare")
    cfg = load_config(_config(tmp_path, bare, catalog, estimators=["IPS", "SNIPS", "DR"], batch=700))
    local, on_ray = _both(cfg, tmp_path)
    assert on_ray.propensity_model is not None
    _assert_same_frame(local.estimates, on_ray.estimates, ["policy", "metric", "estimator", "kind"])
