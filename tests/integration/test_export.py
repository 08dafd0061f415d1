"""`ope export` on a small run with a constrained router, and the deployed router that MLflow serves."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from estimators import IPS
from ope.cli import main
from ope.config import load_config
from ope.data.dataset import BanditDataset
from ope.errors import ConfigError, SchemaError
from ope.evaluation.export import RunFolder, export_policy, gateway_policy
from ope.evaluation.run import RunResult, run_experiment
from ope.models.features import build_features
from ope.models.predictors import mean_q_hat
from ope.models.router import CHOSEN, DeployedRouter, _snapshot, probability_column
from ope.report.outputs import write_outputs
from ope.report.tracking import RECORD
from policies.base import policy_from_json

CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
baseline = "direct_official"
estimators = ["IPS", "SNIPS"]
[predictors]
folds = 2
n_estimators = 15
num_leaves = 7
[[policies]]
name = "direct_official"
kind = "direct_official"
fallback = "cheapest"
[[policies]]
name = "routed"
kind = "constrained"
objective = "cost"
min_satisfaction = 0.7
exploration = 0.05
certify = false
[tracking]
enabled = false
"""


@pytest.fixture(scope="module")
def run(simulated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    """The run (its result and its folder): direct official access and a cross-fitted constrained router."""
    logs, catalog = simulated
    folder = tmp_path_factory.mktemp("export")
    (folder / "c.toml").write_text(CONFIG.format(logs=logs, catalog=catalog))
    result = run_experiment(load_config(folder / "c.toml"), show_progress=False)
    return result, write_outputs(result, folder / "reports", "r")["report"].parent


def test_export_writes_a_litellm_config_and_evaluates_it_against_the_policy_as_computed(
        run: tuple[RunResult, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, folder = run
    out = tmp_path / "litellm.yaml"
    assert main(["export", str(folder), "--policy", "routed", "--format", "litellm", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "'routed' as computed vs as deployable in LiteLLM (SNIPS" in printed and "LiteLLM cannot express: input length" in printed
    assert f"mlflow:    the export is not logged: {folder} has no mlflow.json (the run was not tracked" in printed
    config = yaml.safe_load(out.read_text())
    assert config["router_settings"]["routing_strategy"] == "simple-shuffle" and config["model_list"]
    exports = folder / "exports" / "routed-litellm"
    est = pl.read_csv(exports / "estimates.csv")
    run_est = pl.read_csv(folder / "estimates.csv").filter(pl.col("policy") == "routed", pl.col("kind") == "value")
    again = est.filter(pl.col("policy") == "routed (as computed)", pl.col("kind") == "value")
    joined = run_est.join(again, on=["metric", "estimator"])
    assert joined.height == run_est.height
    np.testing.assert_allclose(joined["value_right"].to_numpy(), joined["value"].to_numpy(), rtol=1e-12)  # the run's numbers
    # the exported policy, rebuilt from its file, scored by IPS directly on the log
    policy = policy_from_json((exports / "policy.json").read_text())
    ds = result.training      # the whole log: an in-memory run fits on every row
    direct = IPS().estimate(ds.to_feedback(), target=policy.action_probabilities(ds))
    name = "routed (as deployable in LiteLLM)"
    ips = est.filter(pl.col("policy") == name, pl.col("estimator") == "IPS")
    values = dict(ips.filter(pl.col("kind") == "value").select("metric", "value").iter_rows())
    for m, metric in enumerate(ds.metrics):
        if metric != "satisfaction":   # satisfaction: evaluated on the rows with feedback only
            assert values[metric] == pytest.approx(direct.value[m], rel=1e-10), metric
    diff = dict(ips.filter(pl.col("kind") == "difference").select("metric", "value").iter_rows())
    base = dict(est.filter(pl.col("policy") == "routed (as computed)", pl.col("estimator") == "IPS",
                           pl.col("kind") == "value").select("metric", "value").iter_rows())
    assert diff["cost_usd"] == pytest.approx(values["cost_usd"] - base["cost_usd"], rel=1e-9)   # paired, on the same rows
    summary = json.loads((exports / "export.json").read_text())
    assert summary["as_deployable"] == name and len(summary["comparison"]) == 7


def test_an_unreachable_tracking_server_keeps_the_export(run: tuple[RunResult, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged record, a store that is gone, a server that does not answer: the export is written, says why it is not
    logged, and succeeds."""
    _, folder = run
    copy = shutil.copytree(folder, tmp_path / "r")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    (copy / RECORD).write_text("{not json")
    out = tmp_path / "weights.json"
    assert main(["export", str(copy), "--policy", "routed", "--format", "json", "--out", str(out), "--quiet"]) == 0
    assert f"tracking failed: {copy / RECORD} is not a tracking record (" in capsys.readouterr().err and out.exists()
    (copy / RECORD).write_text(json.dumps({"tracking_uri": "sqlite:///" + str(tmp_path / "gone.db"), "run_id": "abc", "page": ""}))
    assert main(["export", str(copy), "--policy", "routed", "--format", "json", "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert f"the run's MLflow store sqlite:///{tmp_path / 'gone.db'} (from {copy / RECORD}) no longer exists" in capsys.readouterr().err
    assert not (tmp_path / "gone.db").exists()
    (copy / RECORD).write_text(json.dumps({"tracking_uri": uri, "experiment_id": "1", "run_id": "abc", "page": uri}))
    assert main(["export", str(copy), "--policy", "routed", "--format", "json", "--out", str(out), "--quiet", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert f"tracking failed: the MLflow server {uri} does not answer" in err and "the export is written locally" in err
    assert out.exists() and (copy / "exports" / "routed-json" / "export.json").exists()
    assert main(["export", str(copy), "--policy", "routed", "--format", "json", "--out", str(out), "--quiet", "--overwrite",
                 "--no-tracking"]) == 0
    captured = capsys.readouterr()
    assert "tracking failed" not in captured.err and "mlflow:" not in captured.out


def test_openrouter_and_json_exports(run: tuple[RunResult, Path]) -> None:
    _, folder = run
    preferences, document = gateway_policy(RunFolder.of(folder), "routed", "openrouter")
    assert preferences.name == "routed (as deployable in OpenRouter)"
    assert document["groups"] and all("provider" in g for g in document["groups"])
    _, document = gateway_policy(RunFolder.of(folder), "routed", "json", length_edges=(2000,))
    assert document["input_token_buckets"] == ["0-2000", "2000+"]
    assert {g["input_tokens"] for g in document["groups"] if g["task"] != "*"} == {"0-2000", "2000+"}
    with pytest.raises(ConfigError, match="Unknown export format 'yaml'"):
        export_policy(folder, "routed", "yaml")


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "nope", "--format", "json"], "has no action file for policy 'nope'"),
    (["--policy", "routed", "--format", "litellm", "--length-edges", "100"], "--length-edges is for --format json"),
])
def test_export_errors_name_what_is_wrong(run: tuple[RunResult, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    _, folder = run
    assert main(["export", str(folder), *args, "--out", str(tmp_path / "x.json")]) == 2
    assert message in capsys.readouterr().err


def test_export_refuses_a_folder_that_is_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path), "--policy", "r", "--format", "json", "--out", str(tmp_path / "x.json")]) == 2
    assert "is not a run folder of `ope run`: it has no config.toml or summary.json" in capsys.readouterr().err


def test_the_deployed_router_routes_new_requests_as_the_rule_does(run: tuple[RunResult, Path], tmp_path: Path) -> None:
    """Requests in, through the saved folder: the rule on the fold models' mean q̂, with the history at the log's end."""
    result, _ = run
    ds, policy, models = result.training, result.policies["routed"], result.outcome_models
    assert models is not None
    history = np.where(ds.eligible[:, :, None], _snapshot(ds, models.config.history_hours)[None], np.nan)
    expected = policy.action_probabilities(ds, mean_q_hat(models, ds, build_features(ds, history=history)))
    router = DeployedRouter.load(DeployedRouter.of(policy, ds, models).save(tmp_path / "router"))
    requests = ds.logs.select("request_id", *router.columns)
    np.testing.assert_allclose(router.probabilities(requests), expected, rtol=1e-12, atol=1e-15)
    out = router.predict(requests.head(50))
    pi = out.select([probability_column(a) for a in router.arms]).to_numpy()
    chosen = np.array([router.arms.index(a) for a in out[CHOSEN]])
    assert (pi[np.arange(50), chosen] > 0).all() and out.equals(router.predict(requests.head(50)))
    with pytest.raises(SchemaError, match=r"needs the request columns \['tenant'\]"):
        router.probabilities(requests.drop("tenant"))


@pytest.mark.parametrize(("flags", "message"), [
    (["--tracking-uri", "file:///tmp/mlruns"], "is a file store. Pass e.g. --tracking-uri sqlite:///mlflow.db"),
    (["--no-tracking"], "--register records the router in MLflow's model registry: it needs tracking"),
    (["--tracking-uri", "sqlite:///x.db", "--register-policy", "nope"], "say which policy to register with --register-policy"),
])
def test_register_is_checked_before_the_run(run: tuple[RunResult, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            flags: list[str], message: str) -> None:
    _, folder = run
    config = tmp_path / "tracked.toml"
    config.write_text((folder.parents[1] / "c.toml").read_text().replace("enabled = false", 'experiment = "x"'))
    out = tmp_path / "reports"
    assert main(["run", str(config), "--out", str(out), "--quiet", "--register", "r", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()      # nothing was run


def test_mean_q_hat_scores_unseen_requests_as_a_hold_out_window_is_scored(simulated: tuple[Path, Path]) -> None:
    """The deployed router's q̂ of new requests is `fit_outcome_models`' hold-out q̂: the fold models' mean prediction."""
    from ope.models.predictors import PredictorConfig, fit_outcome_models

    ds = BanditDataset.load(*simulated, sla_latency_ms=10_000)
    train = np.arange(ds.n) < ds.n // 2
    models = fit_outcome_models(ds, PredictorConfig(folds=2, n_estimators=8, num_leaves=7), train=train)
    q_hat = mean_q_hat(models, ds, models.features)
    np.testing.assert_allclose(q_hat[~train], models.q_hat[~train], rtol=1e-10, atol=1e-12)
