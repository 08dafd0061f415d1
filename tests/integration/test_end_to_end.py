"""`ope run` end to end on a small simulated log in a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.cli import main
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.evaluation.tables import ESTIMATE_COLUMNS
from tests.conftest import OFFICIAL_AND_CHEAPEST

CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
baseline = "direct_official"
estimators = ["IPS", "SNIPS"]
alpha = 0.1
sla_latency_ms = 8000
""" + OFFICIAL_AND_CHEAPEST + """[[policies]]
name = "logging <script>alert(1)</script>"
kind = "price_weighted"
epsilon = 0.1
[tracking]
uri = "sqlite:///{tmp}/mlflow.db"
experiment = "e2e"
"""


def _fast_config(tmp: Path, logs: Path, catalog: Path, estimators: list[str], policy: str) -> Path:
    """A config with small cross-fitted models, direct official access and one more policy, untracked."""
    config = tmp / "c.toml"
    config.write_text(f"""
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
estimators = {json.dumps(estimators)}
[predictors]
folds = 3
n_estimators = 30
[[policies]]
name = "direct_official"
kind = "direct_official"
fallback = "uniform"
[[policies]]
{policy}
[tracking]
enabled = false
""")
    return config


@pytest.fixture(scope="module")
def run_dir(simulated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs, catalog = simulated
    tmp = tmp_path_factory.mktemp("run")
    config = tmp / "e2e.toml"
    config.write_text(CONFIG.format(logs=logs, catalog=catalog, tmp=tmp))
    code = main(["run", str(config), "--out", str(tmp / "reports"), "--run-name", "e2e", "--quiet"])
    assert code == 0
    return tmp


def test_outputs_exist_in_long_form(run_dir: Path, simulated: tuple[Path, Path]) -> None:
    out = run_dir / "reports" / "e2e"
    est = pl.read_csv(out / "estimates.csv")
    assert est.columns == ESTIMATE_COLUMNS
    assert set(est["metric"]) == set(METRICS)
    assert set(est["kind"]) == {"value", "difference", "relative"}
    assert est.filter(pl.col("kind") == "value").height == 3 * 2 * len(METRICS)
    assert est.filter(pl.col("kind") != "value").height == 2 * 2 * 2 * len(METRICS)
    assert (est["ci_low"] <= est["value"]).all() and (est["value"] <= est["ci_high"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "direct_official" and summary["data"]["rows"] == 6000
    logged = pl.read_parquet(simulated[0])
    assert summary["data"]["rows_with_feedback"] == logged["satisfaction"].is_not_null().sum()
    assert summary["data"]["rows_with_satisfaction"] == 6000                       # failures without feedback count 0
    assert "rows with satisfaction feedback" in (out / "report.html").read_text()
    assert set(summary["policies"]) == {"direct_official", "cheapest", "logging <script>alert(1)</script>"}
    chosen = summary["headline_estimators"]  # the headline quotes, per metric, the estimator "trust" names
    assert chosen == {m: c["estimator"] for m, c in summary["headline_by_metric"].items()} and set(chosen) == set(METRICS)
    for metric, cell in summary["policies"]["cheapest"]["value"].items():
        row = est.filter((pl.col("policy") == "cheapest") & (pl.col("metric") == metric) & (pl.col("kind") == "value")
                         & (pl.col("estimator") == chosen[metric]))
        assert cell["estimator"] == chosen[metric] and cell["value"] == pytest.approx(row["value"][0], rel=1e-12)
    html = (out / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") >= 2
    actions = pl.read_parquet(out / "actions" / "direct_official.parquet")
    assert actions.columns == ["request_id", "arm", "probability"]
    sums = actions.group_by("request_id").agg(pl.col("probability").sum())
    assert sums.height == 6000 and np.allclose(sums["probability"].to_numpy(), 1.0)


def test_ips_of_the_logging_policy_is_the_observed_mean(run_dir: Path, simulated: tuple[Path, Path]) -> None:
    """The simulator logs with 0.9 · price-weighted + 0.1 · uniform: IPS weights are exactly 1."""
    est = pl.read_csv(run_dir / "reports" / "e2e" / "estimates.csv")
    ds = BanditDataset.load(*simulated, sla_latency_ms=8000)
    w = ds.sample_weight
    for j, metric in enumerate(METRICS):
        observed = ~np.isnan(ds.outcomes[:, j])
        mean = np.dot(w[observed], ds.outcomes[observed, j]) / w[observed].sum()
        for estimator in ("IPS", "SNIPS"):
            got = est.filter((pl.col("policy").str.starts_with("logging")) & (pl.col("metric") == metric)
                             & (pl.col("estimator") == estimator) & (pl.col("kind") == "value"))["value"][0]
            assert got == pytest.approx(mean, rel=1e-9), (metric, estimator)


def test_run_is_tracked_in_mlflow(run_dir: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir}/mlflow.db")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["evaluation.baseline"] == "direct_official"
    summary = json.loads((run_dir / "reports" / "e2e" / "summary.json").read_text())
    headline = summary["policies"]["cheapest"]
    assert run.data.metrics["cheapest/cost_usd"] == pytest.approx(headline["value"]["cost_usd"]["value"], rel=1e-12)
    assert run.data.metrics["cheapest/cost_usd.change_pct"] == pytest.approx(headline["relative"]["cost_usd"]["value"], rel=1e-12)
    assert len(run.data.metrics) <= 3 * 2 * len(METRICS) + 20      # a headline set, not every estimator × kind × stat
    assert not any(".IPS." in key for key in run.data.metrics)
    assert run.data.tags["mlflow.note.content"].startswith("SNIPS vs direct_official — cheapest: ")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"requests.parquet", "catalog.csv"}
    assert inputs["requests.parquet"].dataset.digest == summary["data"]["sha256"]["logs"][:32]
    assert run.info.end_time - run.info.start_time >= 1000 * sum(summary["timings_s"].values()) * 0.9
    assert len(run.data.tags["data_sha256_logs"]) == 64
    assert (run_dir / "mlruns").is_dir()  # artifacts beside the database, not in the working directory
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "summary.json", "estimates.csv", "actions"} <= names
    record = json.loads((run_dir / "reports" / "e2e" / "mlflow.json").read_text())
    assert record == {"tracking_uri": f"sqlite:///{run_dir}/mlflow.db", "experiment_id": exp.experiment_id,
                      "run_id": run.info.run_id, "page": record["page"]} and run.info.run_id in record["page"]



def test_an_export_of_a_tracked_run_is_logged_into_that_run(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """From another directory: the run's record names its SQLite store by absolute path."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    folder = run_dir / "reports" / "e2e"
    assert main(["export", str(folder), "--policy", "cheapest", "--format", "json", "--out", "w.json", "--quiet"]) == 0
    record = json.loads((folder / "mlflow.json").read_text())
    assert f"mlflow:    logged to run {record['run_id']} under exports/cheapest-json/" in capsys.readouterr().out
    client = mlflow.MlflowClient(tracking_uri=record["tracking_uri"])
    assert {"gateway", "report.html", "export.json", "policy.json"} <= {
        Path(a.path).name for a in client.list_artifacts(record["run_id"], "exports/cheapest-json")}
    assert client.get_run(record["run_id"]).data.tags["export.cheapest-json"] == "w.json"
    assert not (tmp_path / "mlflow.db").exists()


def test_tracking_failure_keeps_the_report(simulated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs, catalog = simulated
    config = tmp_path / "c.toml"
    (tmp_path / "a_file").write_text("not a directory")
    config.write_text(CONFIG.format(logs=logs, catalog=catalog, tmp=tmp_path / "a_file"))
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "x", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "tracking failed: MLflow could not record the run" in err and "report written to" in err
    assert (tmp_path / "r" / "x" / "report.html").exists() and not (tmp_path / "r" / "x" / "mlflow.json").exists()


@pytest.mark.parametrize("log", ["logged propensities", "estimated propensities", "no feedback"])
def test_a_run_with_outcome_models_warns_nothing(log: str, simulated: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """No numpy RuntimeWarning (overflow in exp, division by zero, ...) reaches the console from the models."""
    import warnings

    logs, catalog = simulated
    blank = {"estimated propensities": "propensity", "no feedback": "satisfaction"}.get(log)
    if blank is not None:
        pl.read_parquet(logs).with_columns(pl.lit(None, dtype=pl.Float64).alias(blank)).write_parquet(
            logs := tmp_path / "bare.parquet")
    config = _fast_config(tmp_path, logs, catalog, ["SNIPS", "DR"], 'name = "cheapest"\nkind = "cheapest"\nepsilon = 0.2')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", str(config), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert "Warning" not in capsys.readouterr().err


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[data]\nlogs = "a.parquet"\ncatalog = "c.csv"\n[evaluation]\nbaselin = "x"\n')
    assert main(["run", str(config)]) == 2
    assert "unknown key 'baselin' in [evaluation]" in capsys.readouterr().err


def test_log_without_propensities_uses_estimated_ones_and_says_so(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = simulated
    bare = tmp_path / "bare.parquet"
    pl.read_parquet(logs).with_columns(pl.lit(None, dtype=pl.Float64).alias("propensity")).write_parquet(bare)
    config = _fast_config(tmp_path, bare, catalog, ["IPS", "DM", "DR"], 'name = "cheapest"\nkind = "cheapest"\nepsilon = 0.2')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "est", "--quiet"]) == 0
    out = tmp_path / "r" / "est"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["propensities"] == "estimated"
    assert summary["warnings"][0].startswith("PROPENSITIES WERE ESTIMATED")
    assert 0.9 < summary["propensity_diagnostics"]["uniform_mean_weight"] < 1.1
    assert summary["primary_estimator"] == "DR" and "log_latency" in summary["model_quality"]
    assert "PROPENSITIES WERE ESTIMATED" in (out / "report.html").read_text()
    assert (out / "models" / "manifest.json").exists() and (out / "models" / "propensity_fold0.txt").exists()
    est = pl.read_csv(out / "estimates.csv")
    assert set(est["estimator"]) == {"IPS", "DM", "DR"}


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ('time_slice = "1 fortnight"', "time_slice must be a polars duration"),
        ("estimators = []", "estimators must be a non-empty list"),
        ("sla_latency_ms = -5", "sla_latency_ms must be > 0"),
    ],
)
def test_evaluation_values_are_checked_when_the_config_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str], patch: str, match: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[data]\nlogs = "a.parquet"\ncatalog = "c.csv"\n[evaluation]\n{patch}\n[[policies]]\nname = "x"\nkind = "uniform"\n')
    assert main(["run", str(config)]) == 2
    assert match in capsys.readouterr().err


def test_policies_must_be_an_array_of_tables_and_fallback_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[data]\nlogs = "a.parquet"\ncatalog = "c.csv"\n[policies]\nname = "x"\nkind = "uniform"\n')
    assert main(["run", str(config)]) == 2
    assert "written [[policies]]" in capsys.readouterr().err
    config.write_text('[data]\nlogs = "a.parquet"\ncatalog = "c.csv"\n[[policies]]\nname = "d"\nkind = "direct_official"\nfallback = "random"\n')
    assert main(["run", str(config), "--no-tracking"]) == 2
    assert "'fallback' setting of direct_official must be" in capsys.readouterr().err


def test_run_folders_are_never_mixed_or_escaped(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(run_dir / "e2e.toml")
    assert main(["run", config, "--out", str(run_dir / "reports"), "--run-name", "e2e", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["run", config, "--out", str(run_dir / "reports"), "--run-name", "../escaped", "--quiet"]) == 2
    assert "plain folder name" in capsys.readouterr().err


def test_undefined_relative_change_is_null_in_json(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = simulated
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=logs, catalog=catalog, tmp=tmp_path).replace("sla_latency_ms = 8000", "sla_latency_ms = 1"))
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "x", "--quiet", "--no-tracking"]) == 0
    text = (tmp_path / "r" / "x" / "summary.json").read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary["policies"]["cheapest"]["relative"]["sla_hit"]["value"] is None
    assert "n/a (baseline is 0)" in (tmp_path / "r" / "x" / "report.html").read_text()


def test_time_slices_breakdowns_and_shares(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    from ope.config import load_config
    from ope.evaluation.run import run_experiment

    logs, catalog = simulated
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=logs, catalog=catalog, tmp=tmp_path).replace("sla_latency_ms = 8000", 'sla_latency_ms = 8000\ntime_slice = "6h"'))
    result = run_experiment(load_config(config), show_progress=False)
    slices = result.slices
    assert slices["period"].n_unique() == 8  # 2 days in 6-hour periods
    assert set(slices["policy"]) == set(result.names)
    # the per-period values of the logging policy are the observed per-period means (IPS weights are 1)
    ds = result.training  # in memory: the whole log
    period = ds.logs["ts"].dt.truncate("6h")
    first = period.min()
    mask = (period == first).to_numpy()
    j = ds.metrics.index("cost_usd")
    want = np.average(ds.outcomes[mask, j], weights=ds.sample_weight[mask])
    got = slices.filter((pl.col("period") == first) & pl.col("policy").str.starts_with("logging") & (pl.col("metric") == "cost_usd"))
    assert got["value"][0] == pytest.approx(want, rel=1e-9)
    shares = result.shares
    for column in shares.columns[1:]:
        assert shares[column].sum() == pytest.approx(1.0)
    assert set(result.breakdowns["by"]) == {"model", "task"}
    # the logging policy's weights are π/p = 1 up to the ε mix: all of its mass in the [0.5, 2) bin, none at 0
    logging = next(v for k, v in result.weight_shares.items() if k.startswith("logging"))
    assert logging["[0.5, 2)"] == pytest.approx(1.0) and logging["0"] == 0.0
    assert set(result.weight_shares) == set(result.names)


def test_report_shows_intervals_per_group_and_model_quality_next_to_dr(run_dir: Path, simulated: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    from ope.report.markup import num

    breakdown = (run_dir / "reports" / "e2e" / "report.html").read_text().split("Breakdowns by model and task")[1]
    summary = json.loads((run_dir / "reports" / "e2e" / "summary.json").read_text())
    assert "its interval below" in breakdown and breakdown.count("<span class='muted'>[") >= 10
    assert "Outcome models behind" not in (run_dir / "reports" / "e2e" / "report.html").read_text()   # IPS/SNIPS: no models
    config = _fast_config(tmp_path, *simulated, ["SNIPS", "DR"], 'name = "cheapest"\nkind = "cheapest"\nepsilon = 0.2')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "dr", "--quiet"]) == 0
    html = (tmp_path / "r" / "dr" / "report.html").read_text()
    models = html.index("Outcome models behind the model-based numbers")
    assert html.index("Headline: each policy") < models < html.index("Relative change against the baseline")
    auc = json.loads((tmp_path / "r" / "dr" / "summary.json").read_text())["model_quality"]["success"]["auc"]
    assert f"{auc:.3f}" in html[models:models + 3000]
    assert summary["weight_shares"].keys() == summary["policies"].keys() and num(0.5) == "0.5000"


def test_the_saved_config_reproduces_the_run(run_dir: Path, tmp_path: Path) -> None:
    saved = run_dir / "reports" / "e2e" / "config.toml"
    assert main(["run", str(saved), "--out", str(tmp_path), "--run-name", "again", "--quiet", "--no-tracking"]) == 0
    first = pl.read_csv(run_dir / "reports" / "e2e" / "estimates.csv")
    again = pl.read_csv(tmp_path / "again" / "estimates.csv")
    assert first.equals(again)


def test_constrained_router_runs_from_a_config(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = simulated
    policy = 'name = "routed"\nkind = "constrained"\nobjective = "cost"\nmin_satisfaction = 0.72\nexploration = 0.05'
    config = _fast_config(tmp_path, logs, catalog, ["SNIPS", "DR"], policy)
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "c", "--quiet"]) == 0
    out = tmp_path / "r" / "c"
    rule = json.loads((out / "policies" / "routed.json").read_text())
    assert rule  # the deployable rule, reloadable with ConstrainedRouter.from_json
    est = pl.read_csv(out / "estimates.csv").filter((pl.col("policy") == "routed") & (pl.col("estimator") == "DR"))
    cost = est.filter((pl.col("metric") == "cost_usd") & (pl.col("kind") == "relative"))["value"][0]
    assert cost < 0  # cheaper than direct official access
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated_as"]["routed"].startswith("cross-fitted (")
    (target,) = summary["targets"]
    assert {k: target[k] for k in ("policy", "metric", "target")} == {"policy": "routed", "metric": "satisfaction", "target": 0.72}
    sat = est.filter((pl.col("metric") == "satisfaction") & (pl.col("kind") == "value")).row(0, named=True)
    assert target["estimate"] == sat["value"] and target["ci"] == [sat["ci_low"], sat["ci_high"]]
    assert target["verdict"] in ("holds", "fails", "not shown to hold")
    cert = summary["certification"]["routed"]
    assert cert["status"] in ("certified", "not certified") and cert["targets"][0]["key"] == "min_satisfaction"
    assert rule["certificate"]["status"] == cert["status"]
    assert "Targets" in (out / "report.html").read_text()


def test_a_missed_target_is_the_first_warning_everywhere(simulated: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    logs, catalog = simulated
    config = _fast_config(tmp_path, logs, catalog, ["DR"], 'name = "mess"\nkind = "mess_plus"\nmin_satisfaction = 0.99')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "m", "--quiet"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert printed[0].startswith("warning: TARGET MISSED: mess declares satisfaction ≥ 0.99"), printed[:3]
    summary = json.loads((tmp_path / "r" / "m" / "summary.json").read_text())
    assert summary["targets"][0]["verdict"] == "fails" and summary["warnings"][0].startswith("TARGET MISSED")
    assert summary["evaluated_as"]["mess"].startswith("cross-fitted (") and "rollout over the whole log" in summary["evaluated_as"]["mess"]
    html = (tmp_path / "r" / "m" / "report.html").read_text()
    assert html.index("TARGET MISSED") < html.index("<h2>Targets</h2>")


def test_constrained_kind_rejects_epsilon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[data]\nlogs = "a.parquet"\ncatalog = "c.csv"\n[[policies]]\nname = "r"\nkind = "constrained"\nepsilon = 0.1\n')
    assert main(["run", str(config), "--no-tracking"]) == 2
    assert "use 'exploration', not 'epsilon'" in capsys.readouterr().err


def test_summary_lists_set_aside_rows_and_action_files(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = simulated
    broken = tmp_path / "broken.parquet"
    frame = pl.read_parquet(logs)
    frame.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("exploded")).otherwise(pl.col("status")).alias("status")).write_parquet(broken)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=broken, catalog=catalog, tmp=tmp_path).replace("[evaluation]", f'quarantine = "{tmp_path / "bad.parquet"}"\n[evaluation]'))
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "q", "--quiet", "--no-tracking"]) == 0
    summary = json.loads((tmp_path / "r" / "q" / "summary.json").read_text())
    assert summary["warnings"][0] == "3 rows failed validation and were set aside (quarantine file)."
    assert summary["actions"]["direct_official"] == "actions/direct_official.parquet"


def test_online_routers_run_from_a_config_with_replay(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    logs, catalog = simulated
    config = _fast_config(tmp_path, logs, catalog, ["SNIPS", "DR"], 'name = "mess"\nkind = "mess_plus"\nmin_satisfaction = 0.7')
    config.write_text(config.read_text().replace("[tracking]", '[[policies]]\nname = "stage"\nkind = "stage_route"\n'
                                                                 "max_cost_usd = 0.003\n[tracking]"))
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "o", "--quiet"]) == 0
    out = tmp_path / "r" / "o"
    est = pl.read_csv(out / "estimates.csv")
    replay = est.filter(pl.col("estimator") == "Replay")
    assert set(replay["policy"]) == {"mess", "stage"} and set(replay["kind"]) == {"value"}
    assert (replay["n"] >= 2).all() and (replay["ci_low"] <= replay["value"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert sum("Replay" in w and "accepted" in w for w in summary["warnings"]) == 2
    assert {"mess.json", "stage.json"} <= {p.name for p in (out / "policies").iterdir()}


@pytest.mark.parametrize("kind", ["mess_plus", "stage_route"])
def test_online_kinds_reject_epsilon(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[data]\nlogs = "a.parquet"\ncatalog = "c.csv"\n[[policies]]\nname = "r"\nkind = "{kind}"\nepsilon = 0.1\n')
    assert main(["run", str(config), "--no-tracking"]) == 2
    assert "not 'epsilon'" in capsys.readouterr().err


def test_a_policy_without_overlap_is_reported_not_fatal(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    """SNIPS has nothing to normalise by when a policy only plays arms the logger never played: a note, not a crash."""
    from ope.data.dataset import BanditDataset

    logs, catalog = simulated
    official = set(pl.read_csv(catalog).filter(pl.col("official"))["arm"])
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    has_official = (ds.eligible & np.isin(np.array(ds.arms), list(official))).any(axis=1)
    ds.logs.filter(pl.Series(has_official) & ~pl.col("arm").is_in(official)).write_parquet(tmp_path / "third.parquet")
    config = _fast_config(tmp_path, tmp_path / "third.parquet", catalog, ["SNIPS", "IPS"], 'name = "cheapest"\nkind = "cheapest"')
    config.write_text(config.read_text().replace("[evaluation]\n", '[evaluation]\nbaseline = "cheapest"\n'))
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "n", "--quiet"]) == 0
    summary = json.loads((tmp_path / "r" / "n" / "summary.json").read_text())
    assert any(w.startswith("direct_official: SNIPS cannot estimate it") for w in summary["warnings"])
    est = pl.read_csv(tmp_path / "r" / "n" / "estimates.csv")
    snips = est.filter((pl.col("policy") == "direct_official") & (pl.col("estimator") == "SNIPS"))
    assert snips.height == 3 * 7 and snips["value"].is_nan().all()
    ips = est.filter((pl.col("policy") == "direct_official") & (pl.col("estimator") == "IPS") & (pl.col("kind") == "value"))
    assert ips.filter(pl.col("metric") == "cost_usd")["value"][0] == 0.0  # no logged row supports it: IPS says 0


def test_deterministic_logging_gets_model_based_estimates_only(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    """A log routed to the cheapest arm every time, without propensities: no IPS numbers, DM only, said loudly."""
    from ope.data.dataset import BanditDataset
    from policies import Cheapest

    logs, catalog = simulated
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    arms = np.array(ds.arms)[Cheapest().action_probabilities(ds).argmax(axis=1)]
    frame = pl.read_parquet(logs).with_columns(pl.Series("arm", arms), pl.lit(None, dtype=pl.Float64).alias("propensity"))
    frame.write_parquet(tmp_path / "det.parquet")
    config = _fast_config(tmp_path, tmp_path / "det.parquet", catalog, ["IPS", "SNIPS", "DR"], 'name = "cheapest"\nkind = "cheapest"')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "d", "--quiet"]) == 0
    summary = json.loads((tmp_path / "r" / "d" / "summary.json").read_text())
    assert any(w.startswith("no overlap: only model-based estimates possible") for w in summary["warnings"])
    assert summary["primary_estimator"] == "DM" and summary["estimators"] == ["DM"]
    assert set(pl.read_csv(tmp_path / "r" / "d" / "estimates.csv")["estimator"]) == {"DM"}


def test_log_without_satisfaction_feedback_shows_it_missing(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    """Gateway logs rarely carry satisfaction: failed requests alone must not make it look like 0."""
    logs, catalog = simulated
    bare = tmp_path / "nosat.parquet"
    pl.read_parquet(logs).with_columns(pl.lit(None, dtype=pl.Float64).alias("satisfaction")).write_parquet(bare)
    config = _fast_config(tmp_path, bare, catalog, ["SNIPS", "DR"], 'name = "cheapest"\nkind = "cheapest"\nepsilon = 0.1')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "s", "--quiet"]) == 0
    out = tmp_path / "r" / "s"
    summary = json.loads((out / "summary.json").read_text())
    assert any(w.startswith("NO SATISFACTION FEEDBACK") for w in summary["warnings"])
    est = pl.read_csv(out / "estimates.csv")
    assert est.filter(pl.col("metric") == "satisfaction")["value"].is_nan().all()
    assert est.filter(pl.col("metric") == "cost_usd")["value"].is_finite().all()
    assert summary["policies"]["cheapest"]["value"]["satisfaction"]["value"] is None


def test_log_where_nothing_carries_satisfaction_still_estimates_the_rest(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    """Only successful requests and no feedback at all: satisfaction is NaN on every row, every other metric is estimated."""
    logs, catalog = simulated
    ok_only = tmp_path / "ok.parquet"
    pl.read_parquet(logs).filter(pl.col("status") == "ok").with_columns(
        pl.lit(None, dtype=pl.Float64).alias("satisfaction")).write_parquet(ok_only)
    config = _fast_config(tmp_path, ok_only, catalog, ["SNIPS", "DR"], 'name = "cheapest"\nkind = "cheapest"\nepsilon = 0.1')
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "k", "--quiet"]) == 0
    est = pl.read_csv(tmp_path / "r" / "k" / "estimates.csv")
    assert est.filter(pl.col("metric") == "satisfaction")["value"].is_nan().all()
    rest = est.filter(pl.col("metric") != "satisfaction")
    assert rest["value"].is_finite().all() and rest.height == 2 * (6 + 3 * 6)  # 2 estimators × (baseline value + policy 3 kinds) × 6


def test_a_model_too_few_rows_can_fit_predicts_its_mean_on_the_outcome_scale(simulated: tuple[Path, Path]) -> None:
    from ope.data.dataset import BanditDataset
    from ope.models.predictors import PredictorConfig, fit_outcome_models

    logs, catalog = simulated
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    small = ds.subset(np.arange(ds.n) < 30)
    models = fit_outcome_models(small, PredictorConfig(folds=2, n_estimators=5, min_child_samples=50))
    assert set(models.extra["not_fitted"]) == {"success", "satisfaction", "sla_hit", "log_ttft", "log_latency",
                                               "log_output_tokens", "log_tps"}
    ttft = models.q_hat[..., list(small.metrics).index("ttft_ms")][small.eligible]
    w = small.sample_weight
    np.testing.assert_allclose(ttft, np.average(small.logs["ttft_ms"].to_numpy(), weights=w), rtol=1e-9)


@pytest.mark.parametrize(("actions", "written"), [('"none"', set()), ('["cheapest"]', {"cheapest"}), ('"all"', {"direct_official", "cheapest"})])
def test_output_actions_chooses_the_action_files(simulated: tuple[Path, Path], tmp_path: Path, actions: str, written: set[str]) -> None:
    logs, catalog = simulated
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=logs, catalog=catalog, tmp=tmp_path).split("[[policies]]\nname = \"logging")[0]
                      + f"[output]\nactions = {actions}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--run-name", "a", "--quiet", "--no-tracking"]) == 0
    run = tmp_path / "r" / "a"
    assert {p.stem for p in (run / "actions").glob("*.parquet")} == written
    assert set(json.loads((run / "summary.json").read_text())["actions"]) == written
    # the estimates do not depend on which action files are written
    assert pl.read_csv(run / "estimates.csv").filter(pl.col("policy") == "cheapest").height == 7 * 2 * 3


def test_output_actions_must_name_policies(simulated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs, catalog = simulated
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=logs, catalog=catalog, tmp=tmp_path) + '[output]\nactions = ["nope"]\n')
    assert main(["run", str(config), "--quiet", "--no-tracking"]) == 2
    assert "[output] actions names unknown policies ['nope']" in capsys.readouterr().err
