"""`ope run` against a real `mlflow server` on loopback, read back through the MLflow client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ope.cli import main
from tests.conftest import OFFICIAL_AND_CHEAPEST

pytestmark = pytest.mark.slow  # a live MLflow server: run in CI, skipped by -m "not slow"

CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
baseline = "direct_official"
estimators = ["IPS", "SNIPS"]
""" + OFFICIAL_AND_CHEAPEST + """[tracking]
experiment = "server-test"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A light `mlflow server` (one worker, no job runner) on a free loopback port, shared by this module's tests;
    stopped by its PID."""
    tmp_path = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    assert mlflow_bin, "the mlflow command must be installed with the package"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination",
         str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not become healthy:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _opens_in_the_machine_learning_view(page: str, run_id: str) -> None:
    """The printed link, in headless Chromium: MLflow's "Model training" navigation (Runs, Model registry), not the
    GenAI one (Sessions, Judges) that MLflow 3 opens by default whatever the experiment's tags."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is needed to check the MLflow link: apt-get install -y chromium (.ci/run does it)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                          "--virtual-time-budget=15000", "--dump-dom", page], capture_output=True, text=True, timeout=120,
                         check=False).stdout
    assert run_id in dom and "SNIPS vs direct_official" in dom, dom[-2000:]
    assert "Model registry" in dom and "Judges" not in dom


def test_ope_run_is_tracked_on_a_live_server(tmp_path: Path, simulated: tuple[Path, Path], mlflow_server: str,
                                             capsys: pytest.CaptureFixture) -> None:
    logs, catalog = simulated
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.format(logs=logs, catalog=catalog))
    code = main(["run", str(config), "--out", str(tmp_path / "reports"), "--run-name", "live", "--quiet",
                 "--tracking-uri", mlflow_server])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"in {mlflow_server}" in out.out and "warning" not in out.err

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("server-test")
    (run,) = client.search_runs([exp.experiment_id])
    summary = json.loads((tmp_path / "reports" / "live" / "summary.json").read_text())
    expected = summary["policies"]["cheapest"]["relative"]["cost_usd"]["value"]
    assert run.data.metrics["cheapest/cost_usd.change_pct"] == pytest.approx(expected, rel=1e-12)
    assert run.data.tags["mlflow.note.content"].startswith("SNIPS vs direct_official — cheapest:")
    page = f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    assert page in out.out
    _opens_in_the_machine_learning_view(page, run.info.run_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} == {summary["data"]["sha256"][k][:32] for k in ("logs", "catalog")}
    assert run.data.params["evaluation.baseline"] == "direct_official"
    assert run.data.tags["data_sha256_logs"] == summary["data"]["sha256"]["logs"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "summary.json", "estimates.csv", "config.toml", "actions"} <= artifacts
    report = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path / "back"))
    assert Path(report).read_text() == (tmp_path / "reports" / "live" / "report.html").read_text()


ROUTER_CONFIG = CONFIG.replace('kind = "cheapest"\nepsilon = 0.05', """kind = "constrained"
objective = "cost"
min_satisfaction = 0.7
exploration = 0.05
certify = false""").replace('name = "cheapest"', 'name = "routed"').replace('"server-test"', '"server-router"') + """
[predictors]
folds = 2
n_estimators = 15
num_leaves = 7
"""

SERVE = """
import sys, mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/ope-router/1")
model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])
"""


def test_the_router_is_registered_and_routes_in_a_fresh_process(tmp_path: Path, simulated: tuple[Path, Path], mlflow_server: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """`ope run --register`, then `mlflow.pyfunc.load_model(...).predict` in a new interpreter: the run folder's rule."""
    import mlflow
    import numpy as np
    import polars as pl

    from ope.data.dataset import BanditDataset
    from ope.models.router import CHOSEN, DeployedRouter, probability_column
    from ope.models.serialization import load_models, outcome_models
    from policies.constrained import ConstrainedRouter

    logs, catalog = simulated
    config = tmp_path / "c.toml"
    config.write_text(ROUTER_CONFIG.format(logs=logs, catalog=catalog))
    code = main(["run", str(config), "--out", str(tmp_path / "reports"), "--run-name", "reg", "--quiet",
                 "--tracking-uri", mlflow_server, "--register", "ope-router"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "registered: models:/ope-router/1 (policy 'routed')" in out.out
    # the rule and models the run folder holds, rebuilt here: what the served model must reproduce
    folder = tmp_path / "reports" / "reg"
    ds = BanditDataset.load(logs, catalog, sla_latency_ms=10_000)
    boosters, manifest = load_models(folder / "models")
    policy = ConstrainedRouter.from_json((folder / "policies" / "routed.json").read_text())
    router = DeployedRouter.of(policy, ds, outcome_models(manifest, boosters))
    requests = ds.logs.tail(40).select("request_id", *router.columns).with_columns(pl.col("ts").dt.replace_time_zone(None))
    requests.write_parquet(tmp_path / "requests.parquet")
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    served = subprocess.run([sys.executable, str(script), mlflow_server, str(tmp_path / "requests.parquet"),
                             str(tmp_path / "served.parquet")], capture_output=True, text=True, timeout=300, check=False)
    assert served.returncode == 0, served.stderr[-3000:]
    got = pl.read_parquet(tmp_path / "served.parquet")
    expected = router.probabilities(requests)
    pi = got.select([probability_column(a) for a in router.arms]).to_numpy()
    np.testing.assert_allclose(pi, expected, rtol=1e-12, atol=1e-15)
    assert got["request_id"].to_list() == requests["request_id"].to_list()
    assert (expected[np.arange(40), [router.arms.index(a) for a in got[CHOSEN]]] > 0).all()
    signature = mlflow.models.get_model_info("models:/ope-router/1").signature
    assert signature.inputs.input_names() == ["request_id", *router.columns]
    assert signature.outputs.input_names()[-1] == CHOSEN
    # the export of the tracked run is logged into that run
    record = json.loads((folder / "mlflow.json").read_text())
    gateway = tmp_path / "litellm.yaml"
    assert main(["export", str(folder), "--policy", "routed", "--format", "litellm", "--out", str(gateway), "--quiet"]) == 0
    assert f"mlflow:    logged to run {record['run_id']} under exports/routed-litellm/" in capsys.readouterr().out
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    logged = {Path(a.path).name for a in client.list_artifacts(record["run_id"], "exports/routed-litellm")}
    assert {"gateway", "report.html", "export.json", "policy.json", "estimates.csv"} <= logged
    assert [a.path for a in client.list_artifacts(record["run_id"], "exports/routed-litellm/gateway")] == [
        "exports/routed-litellm/gateway/litellm.yaml"]
    assert client.get_run(record["run_id"]).data.tags["export.routed-litellm"] == "litellm.yaml"
