"""Streamed runs (`ope.evaluation.engines.local`) give the in-memory results: estimates, tables, actions, errors, quarantine."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.cli import main
from ope.config import ExperimentConfig, load_config
from ope.data import source as stream_source
from ope.data.catalog import load_catalog
from ope.data.dataset import BanditDataset
from ope.data.overlap import RoutingCounts, detect_deterministic_router
from ope.data.readers import log_files, read_table
from ope.data.source import LogSource
from ope.data.validate import load_logs
from ope.errors import ConfigError, OPEError, SchemaError
from ope.evaluation.batch import evaluate_log_batch
from ope.evaluation.engines import local as streaming
from ope.evaluation.plan import INFERENCE_METHODS
from ope.evaluation.run import run_experiment
from ope.models.features import build_features
from ope.models.history import HistoryWindow
from ope.models.sample import TrainingSample
from ope.simulate import PartitionedSimulation, write_partitioned
from policies import Cheapest
from tests.conftest import OFFICIAL_AND_CHEAPEST

ROWS = 6_000
CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
batch_rows = {batch}
max_train_rows = {train}
[evaluation]
baseline = "direct_official"
estimators = {estimators}
alpha = 0.1
inference = "{inference}"
[predictors]
folds = 2
n_estimators = 15
num_leaves = 7
{policies}
[tracking]
enabled = false
"""
HEURISTIC = OFFICIAL_AND_CHEAPEST + """[[policies]]
name = "price_weighted"
kind = "price_weighted"
[[policies]]
name = "fastest"
kind = "fastest"
epsilon = 0.05
"""
CONSTRAINED = """
[[policies]]
name = "routed"
kind = "constrained"
objective = "cost"
min_sla_hit = 0.3
exploration = 0.05
"""


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A simulated log written as four time-ordered parquet files, and its catalog."""
    out = tmp_path_factory.mktemp("sim")
    return write_partitioned(out, rows=ROWS, days=2, seed=5, partition_rows=ROWS // 4)


def _config(tmp: Path, logs: Path, catalog: Path, *, estimators: list[str], policies: str = HEURISTIC, batch: int = 700,
            train: int = 10**7, name: str = "c.toml", inference: str = "skew") -> Path:
    path = tmp / name
    path.write_text(CONFIG.format(logs=logs, catalog=catalog, batch=batch, train=train, estimators=json.dumps(estimators),
                                  policies=policies, inference=inference))
    return path


def _run(config: Path, out: Path, *extra: str) -> Path:
    assert main(["run", str(config), "--out", str(out), "--run-name", "r", "--quiet", *extra]) == 0
    return out / "r"


def _assert_same_frame(a: pl.DataFrame, b: pl.DataFrame, keys: list[str], rtol: float = 1e-9) -> None:
    assert a.columns == b.columns and a.height == b.height
    a, b = a.sort(keys, nulls_last=True), b.sort(keys, nulls_last=True)
    for column in a.columns:
        if a[column].dtype.is_float():
            np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=rtol, atol=1e-12, err_msg=column)
        else:
            assert a[column].to_list() == b[column].to_list(), column


@pytest.mark.parametrize(("estimators", "policies", "inference"), [
    pytest.param(["IPS", "SNIPS"], HEURISTIC, "skew", id="model-free"),
    # the arm-pooled interval's per-arm sums merged over batches (skew-corrected for the estimators without them)
    pytest.param(["IPS", "SNIPS", "DM", "DR", "SNDR", "SwitchDR", "DRos"], HEURISTIC + CONSTRAINED, "arm-pooled",
                 id="model-based+constrained", marks=pytest.mark.slow),
])
def test_streamed_run_writes_the_in_memory_results(partitioned: tuple[Path, Path], tmp_path: Path, estimators: list[str],
                                                   policies: str, inference: str) -> None:
    logs, catalog = partitioned
    config = _config(tmp_path, logs, catalog, estimators=estimators, policies=policies, inference=inference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole, streamed = _run(config, tmp_path / "memory"), _run(config, tmp_path / "stream", "--streaming")
    keys = ["policy", "metric", "estimator", "kind"]
    _assert_same_frame(pl.read_csv(whole / "estimates.csv"), pl.read_csv(streamed / "estimates.csv"), keys)
    _assert_same_frame(pl.read_csv(whole / "quantiles.csv"), pl.read_csv(streamed / "quantiles.csv"), keys + ["quantile"])
    _assert_same_frame(pl.read_csv(whole / "cdf.csv"), pl.read_csv(streamed / "cdf.csv"), ["policy", "metric", "estimator", "threshold"])
    for file in sorted((whole / "actions").iterdir()):
        _assert_same_frame(pl.read_parquet(file), pl.read_parquet(streamed / "actions" / file.name), ["request_id", "arm"])
    a, b = (json.loads((p / "summary.json").read_text()) for p in (whole, streamed))
    assert b["data"].pop("streamed")["batches"] == -(-ROWS // 700)
    assert a["data"] == b["data"] and a["warnings"] == b["warnings"]
    assert a["diagnostics"].keys() == b["diagnostics"].keys()
    assert a["interval_methods"]["estimates"] == INFERENCE_METHODS[inference]


def test_streamed_tables_equal_the_in_memory_ones(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    cfg = load_config(_config(tmp_path, logs, catalog, estimators=["IPS", "SNIPS"], batch=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = run_experiment(cfg, show_progress=False)
        streamed = run_experiment(_streaming(cfg), show_progress=False)
    assert whole.engine == "memory" and streamed.engine == "local"
    _assert_same_frame(whole.slices, streamed.slices, ["period", "policy", "metric"])
    _assert_same_frame(whole.breakdowns, streamed.breakdowns, ["by", "group", "policy", "metric"])
    _assert_same_frame(whole.shares, streamed.shares, ["provider"])
    assert whole.weight_shares.keys() == streamed.weight_shares.keys()
    for policy, shares in whole.weight_shares.items():
        assert streamed.weight_shares[policy] == pytest.approx(shares, rel=1e-12, abs=1e-15)


def _streaming(cfg: ExperimentConfig) -> ExperimentConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, streaming=True))


def test_a_log_beyond_the_memory_budget_streams_on_its_own(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    cfg = load_config(_config(tmp_path, logs, catalog, estimators=["IPS"]))
    small = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, memory_budget_mb=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_experiment(small, show_progress=False).engine == "local"


def test_history_features_across_batches_equal_the_whole_log(partitioned: tuple[Path, Path]) -> None:
    logs, catalog = partitioned
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    expected = build_features(ds, window_hours=6.0).history
    window = HistoryWindow(ds.catalog.n_arms, 6.0)
    cuts = [0, 1, 700, 2_500, 2_501, 4_000, ds.n]
    got = np.concatenate([window(ds.subset(np.isin(np.arange(ds.n), np.arange(a, b)))) for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    np.testing.assert_array_equal(got, expected)  # bit for bit, NaN where the window is empty


def test_training_sample_is_uniform_capped_and_independent_of_batching(partitioned: tuple[Path, Path]) -> None:
    logs, catalog = partitioned
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    samples = []
    for step in (300, 1_111, ds.n):
        sample = TrainingSample(1_000)
        for start in range(0, ds.n, step):
            part = ds.subset((np.arange(ds.n) >= start) & (np.arange(ds.n) < start + step))
            sample.offer(part, start, None)
        samples.append(sample.result()[0]["request_id"].to_list())
    assert len(samples[0]) == 1_000 and samples[0] == samples[1] == samples[2]
    order = ds.logs["request_id"].to_list()
    assert samples[0] == sorted(samples[0], key=order.index)  # log order kept


def _planted(logs: Path, out: Path) -> Path:
    """The partitioned log with bad rows in several files: a repeated id across files, nulls, bad values."""
    out.mkdir()
    files = log_files(logs)
    first_id = pl.read_parquet(files[0])["request_id"][3]
    for i, file in enumerate(files):
        frame = pl.read_parquet(file)
        n = frame.height
        frame = frame.with_columns(
            pl.when(pl.int_range(n) == 10 + i).then(pl.lit(1.5)).otherwise(pl.col("propensity")).alias("propensity"),
            pl.when(pl.int_range(n) == 20).then(pl.lit(None)).otherwise(pl.col("input_tokens")).alias("input_tokens"),
            pl.when(pl.int_range(n) == 30 + i).then(pl.lit("nowhere/none")).otherwise(pl.col("arm")).alias("arm"),
        )
        if i in (1, 3):
            frame = frame.with_columns(pl.when(pl.int_range(n) == 5).then(pl.lit(first_id)).otherwise(pl.col("request_id")).alias("request_id"))
        frame.write_parquet(out / file.name)
    return out


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_validation_table_and_quarantine_match_the_whole_log(partitioned: tuple[Path, Path], tmp_path: Path, suffix: str) -> None:
    logs, catalog = partitioned
    bad = _planted(logs, tmp_path / "bad")
    with pytest.raises(SchemaError) as whole:
        load_logs(bad, load_catalog(catalog))
    config = _config(tmp_path, bad, catalog, estimators=["IPS"], batch=500)
    with pytest.raises(SchemaError) as streamed:
        run_experiment(_streaming(load_config(config)), show_progress=False)
    assert str(streamed.value) == str(whole.value)
    assert "duplicate request_id — 2 rows" in str(whole.value)
    memory_q, stream_q = tmp_path / f"memory{suffix}", tmp_path / f"stream{suffix}"
    load_logs(bad, load_catalog(catalog), quarantine=memory_q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(config), "--streaming", "--quarantine", str(stream_q), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    a, b = read_table(memory_q), read_table(stream_q)
    assert a.height == 4 * 3 + 2 and a.equals(b)


def test_log_path_may_be_a_directory_or_a_glob(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    files = log_files(logs)
    assert len(files) == 4 and files == sorted(files)
    whole = pl.concat([pl.read_parquet(f) for f in files])
    assert read_table(logs).equals(whole) and read_table(logs / "part-*.parquet").equals(whole)
    assert LogSource.open(str(logs / "*.parquet")).n_rows == ROWS
    assert main(["validate", str(logs), "--catalog", str(catalog)]) == 0
    with pytest.raises(SchemaError, match="No parquet files"):
        log_files(tmp_path / "*.parquet")


def test_streaming_refuses_what_it_cannot_do(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    online = HEURISTIC + '\n[[policies]]\nname = "mess"\nkind = "mess_plus"\nmin_satisfaction = 0.6\n'
    cfg = _streaming(load_config(_config(tmp_path, logs, catalog, estimators=["IPS", "DR"], policies=online)))
    with pytest.raises(ConfigError, match="learn online"):
        run_experiment(cfg, show_progress=False)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(logs, shuffled)
    files = log_files(shuffled)
    files[0].rename(files[0].with_name("z.parquet"))  # the first hours now come last
    cfg = _streaming(load_config(_config(tmp_path, shuffled, catalog, estimators=["IPS", "DR"])))
    with pytest.raises(OPEError, match="not in time order"):
        run_experiment(cfg, show_progress=False)


def test_partitioned_simulation_is_time_ordered_reproducible_and_keeps_the_truth(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    plan = PartitionedSimulation.load(logs.parent)
    frame = read_table(logs)
    assert frame.height == ROWS == sum(p.rows for p in plan.parts) and frame["request_id"].n_unique() == ROWS
    assert frame["ts"].is_sorted()
    for part, file in zip(plan.parts, log_files(logs), strict=True):
        ts = pl.read_parquet(file)["ts"].dt.epoch("us")
        assert part.start_us <= ts.min() and ts.max() < part.end_us  # type: ignore[operator]
    again, _ = write_partitioned(tmp_path, rows=ROWS, days=2, seed=5, partition_rows=ROWS // 4)
    assert [f.read_bytes() for f in log_files(again)] == [f.read_bytes() for f in log_files(logs)]
    one = plan.partition(2)
    assert one.logs.equals(pl.read_parquet(log_files(logs)[2]))
    truth = plan.true_value(lambda sim: sim.world.logging_probabilities, 10_000)
    w = frame["sample_weight"].to_numpy()
    logged_cost = float(w @ frame["cost_usd"].to_numpy() / w.sum())
    assert truth["cost_usd"] == pytest.approx(logged_cost, rel=0.05)  # the logger's value, estimated on-policy


def test_quarantine_may_not_land_where_the_logs_are_read(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    """A quarantine file inside the logs folder, or matching the logs pattern, would be read back as logs next run."""
    from ope.data.validate import check_quarantine
    from ope.errors import SchemaError

    logs, _ = partitioned
    folder = logs if logs.is_dir() else logs.parent
    with pytest.raises(SchemaError, match="inside the logs folder"):
        check_quarantine(folder / "bad.parquet", folder)
    with pytest.raises(SchemaError, match="matches the logs pattern"):
        check_quarantine(tmp_path / "bad.parquet", tmp_path / "*.parquet")
    check_quarantine(tmp_path / "bad.csv", tmp_path / "*.parquet")  # another extension: not read as logs


def _without_propensities(logs: Path, out: Path) -> Path:
    """The partitioned log with no propensity logged (as gateway logs come)."""
    out.mkdir()
    for file in log_files(logs):
        pl.read_parquet(file).with_columns(pl.lit(None, dtype=pl.Float64).alias("propensity")).write_parquet(out / file.name)
    return out


def test_streamed_run_estimates_propensities_as_in_memory(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    """No logged propensities: the propensity model is cross-fitted on the sample and scores every batch row by its fold."""
    logs, catalog = partitioned
    bare = _without_propensities(logs, tmp_path / "bare")
    cfg = load_config(_config(tmp_path, bare, catalog, estimators=["IPS", "SNIPS", "DR"], batch=900))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = run_experiment(cfg, show_progress=False)
        streamed = run_experiment(_streaming(cfg), show_progress=False)
    assert whole.propensity_model is not None and streamed.propensity_model is not None
    _assert_same_frame(whole.estimates, streamed.estimates, ["policy", "metric", "estimator", "kind"])
    assert streamed.propensity_model.diagnostics == whole.propensity_model.diagnostics
    assert [n for n in streamed.notes if n.startswith("PROPENSITIES WERE ESTIMATED")] == \
        [n for n in whole.notes if n.startswith("PROPENSITIES WERE ESTIMATED")]


def test_batches_scored_by_models_are_evaluated_in_slices_with_the_same_sums(partitioned: tuple[Path, Path], tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of 900 rows worked through in slices of 130 rows (q̂ memory bounded) gives the in-memory numbers."""
    import ope.evaluation.batch

    logs, catalog = partitioned
    monkeypatch.setattr(ope.evaluation.batch, "MODEL_CELLS", 130 * load_catalog(catalog).n_arms)
    cfg = load_config(_config(tmp_path, logs, catalog, estimators=["IPS", "DR", "SwitchDR"], batch=900))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = run_experiment(cfg, show_progress=False)
        streamed = run_experiment(_streaming(cfg), show_progress=False)
    _assert_same_frame(whole.estimates, streamed.estimates, ["policy", "metric", "estimator", "kind"])
    _assert_same_frame(whole.breakdowns, streamed.breakdowns, ["by", "group", "policy", "metric"])
    assert set(whole.quantiles["estimator"]) == {"IPS", "DR"}  # DR's CDFs from the distributional models, in slices too
    _assert_same_frame(whole.quantiles, streamed.quantiles, ["policy", "metric", "estimator", "kind", "quantile"])
    _assert_same_frame(whole.cdfs, streamed.cdfs, ["policy", "metric", "estimator", "threshold"])


@pytest.mark.parametrize("ids_per_pass", [10**9, 700])
def test_repeated_ids_are_found_in_any_number_of_passes(partitioned: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, ids_per_pass: int) -> None:
    """One pass or many over slices of the hash range (memory bounded by `IDS_PER_PASS`) find the same ids."""
    logs, _ = partitioned
    bad = _planted(logs, tmp_path / "bad")
    frame = pl.concat([pl.read_parquet(f) for f in log_files(bad)])
    want = frame["request_id"].filter(frame["request_id"].is_duplicated()).unique().sort()
    monkeypatch.setattr(stream_source, "IDS_PER_PASS", ids_per_pass)
    got = LogSource.open(bad).repeated_ids()
    assert want.len() == 1 and got.to_list() == want.to_list()


def test_a_run_that_fails_midway_leaves_no_action_files_behind(partitioned: tuple[Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    logs, catalog = partitioned
    config = _streaming(load_config(_config(tmp_path, logs, catalog, estimators=["IPS"], batch=500)))
    calls = []

    def failing(*args: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return evaluate_log_batch(*args)  # type: ignore[arg-type]

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(streaming, "evaluate_log_batch", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        run_experiment(config, show_progress=False)
    assert len(calls) == 3 and list(scratch.iterdir()) == []


def _deterministic(logs: Path, catalog: Path, out: Path) -> Path:
    """The partitioned log routed to the cheapest eligible arm every time, without propensities."""
    out.mkdir()
    for file in log_files(logs):
        ds = BanditDataset.load(file, catalog, sla_latency_ms=10_000)
        arms = np.array(ds.arms)[Cheapest().fit(ds).action_probabilities(ds).argmax(axis=1)]
        ds.logs.with_columns(pl.Series("arm", arms), pl.lit(None, dtype=pl.Float64).alias("propensity")).write_parquet(out / file.name)
    return out


def test_routing_counts_merged_over_batches_give_the_whole_log_finding(partitioned: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = partitioned
    for path in (logs, _deterministic(logs, catalog, tmp_path / "det")):
        ds = BanditDataset.load(path, catalog, sla_latency_ms=10_000)
        counts = RoutingCounts()
        for a, b in itertools.pairwise([0, 1, 900, 2_500, 4_001, ds.n]):
            part = ds.subset(np.isin(np.arange(ds.n), np.arange(a, b)))
            counts.add(part.logs, part.eligible)
        assert counts.finding().to_dict() == detect_deterministic_router(ds.logs, ds.eligible).to_dict()
    assert counts.finding().deterministic


def test_a_deterministic_logger_is_found_on_every_row_when_models_train_on_a_sample(partitioned: tuple[Path, Path],
                                                                                    tmp_path: Path) -> None:
    logs, catalog = partitioned
    det = _deterministic(logs, catalog, tmp_path / "det")
    cfg = load_config(_config(tmp_path, det, catalog, estimators=["IPS", "SNIPS", "DR"], batch=900, train=2_000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = run_experiment(cfg, show_progress=False)
        streamed = run_experiment(_streaming(cfg), show_progress=False)
    assert streamed.training.n == 2_000 < streamed.facts.rows
    verdict = [n for n in whole.notes if n.startswith("no overlap")]
    assert len(verdict) == 1 and [n for n in streamed.notes if n.startswith("no overlap")] == verdict
    assert set(streamed.estimates["estimator"]) == set(whole.estimates["estimator"]) == {"DM"}
