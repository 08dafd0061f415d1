"""`ope tune`: time split, hold-out predictions, judging, recommendation, outputs and nested MLflow runs."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.cli import main
from ope.config import TuneConfig, load_config
from ope.data.dataset import BanditDataset, derive_outcomes
from ope.data.schema import METRICS
from ope.errors import ConfigError
from ope.evaluation.tables import ESTIMATE_COLUMNS
from ope.evaluation.tune import TunePoint, TuneResult, _judge, split_by_time
from ope.models.predictors import PredictorConfig, fit_outcome_models

TUNE_CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
baseline = "direct_official"
estimators = ["DR"]
alpha = 0.1
sla_latency_ms = 8000
[predictors]
folds = 2
n_estimators = 25
[[policies]]
name = "direct_official"
kind = "direct_official"
fallback = "cheapest"
[[policies]]
name = "routed <script>x</script>"
kind = "constrained"
objective = "cost"
exploration = 0.1
max_rows = 1500
[tune]
train_fraction = 0.5
min_sla_hit = {target}
[tune.grid]
min_sla_hit = [0.3, 0.45]
min_satisfaction = [0.0, 0.99]
[tracking]
uri = "sqlite:///{tmp}/mlflow.db"
experiment = "tune-test"
"""


def _write(tmp: Path, simulated: tuple[Path, Path], target: float = 0.3, extra: str = "") -> Path:
    logs, catalog = simulated
    path = tmp / "tune.toml"
    path.write_text(TUNE_CONFIG.format(logs=logs, catalog=catalog, tmp=tmp, target=target) + extra)
    return path


def _estimates(values: dict[str, tuple[float, float, float]]) -> pl.DataFrame:
    rows = [{"policy": "p", "metric": m, "estimator": "DR", "kind": "value", "value": v, "stderr": 0.0, "ci_low": lo,
             "ci_high": hi, "n": 1.0, "ess": 1.0} for m, (v, lo, hi) in values.items()]
    return pl.DataFrame(rows).select(ESTIMATE_COLUMNS)


def test_split_by_time_cuts_the_span_not_the_rows() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(minutes=i) for i in range(300)] + [t0 + timedelta(days=1, minutes=i) for i in range(100)]
    ds = type("D", (), {"logs": pl.DataFrame({"ts": ts})})()
    train, at = split_by_time(ds, 0.5)  # type: ignore[arg-type]
    assert at == t0 + timedelta(hours=12, minutes=49.5)
    assert train.sum() == 300 and not train[300:].any()


def test_split_by_time_refuses_a_window_too_small() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    ds = type("D", (), {"logs": pl.DataFrame({"ts": [t0 + timedelta(minutes=i) for i in range(150)]})})()
    with pytest.raises(ConfigError, match="at least 100"):
        split_by_time(ds, 0.5)  # type: ignore[arg-type]


def test_judge_uses_the_conservative_bound_of_each_target() -> None:
    tune = TuneConfig(policy="p", grid={"min_sla_hit": [0.5]}, min_sla_hit=0.5, min_satisfaction=0.7, max_cost_usd=0.002)
    est = _estimates({"sla_hit": (0.55, 0.49, 0.61), "satisfaction": (0.75, 0.70, 0.80), "cost_usd": (0.0019, 0.0018, 0.0021)})
    reasons = _judge(est, tune)
    assert len(reasons) == 2
    assert "sla_hit low bound 0.49" in reasons[0] and "cost_usd high bound 0.0021" in reasons[1]
    ok = _estimates({"sla_hit": (0.55, 0.50, 0.61), "satisfaction": (0.75, 0.70, 0.80), "cost_usd": (0.0019, 0.0018, 0.002)})
    assert _judge(ok, tune) == ()


def _point(label: str, cost: float, sla: float, sat: float, status: str = "safe") -> TunePoint:
    est = _estimates({"cost_usd": (cost, cost, cost), "sla_hit": (sla, sla, sla), "satisfaction": (sat, sat, sat)})
    return TunePoint(label, {"min_sla_hit": sla}, status, (), est)


def test_pareto_keeps_exactly_the_undominated_points() -> None:
    points = [_point("a", 1.0, 0.5, 0.7), _point("b", 2.0, 0.6, 0.7), _point("c", 2.5, 0.55, 0.69),  # c: dominated by b
              _point("d", 1.0, 0.5, 0.7), TunePoint("e", {}, "infeasible", ("x",))]
    result = TuneResult.__new__(TuneResult)
    object.__setattr__(result, "points", points)
    assert result.pareto == [0, 1, 3]


def test_impossible_hold_out_estimates_are_flagged_in_every_output(capsys: pytest.CaptureFixture[str]) -> None:
    from ope.report.console import print_tune_table
    from ope.report.tune_html import _points_table

    def every(**given: tuple[float, float, float]) -> pl.DataFrame:
        return _estimates(dict.fromkeys(METRICS, (0.5, 0.4, 0.6)) | given)

    result = TuneResult.__new__(TuneResult)
    for name, value in {"points": [TunePoint("a", {"min_sla_hit": 0.5}, "safe", (), every(sla_hit=(1.2, 1.1, 1.3))),
                                   TunePoint("e", {"min_sla_hit": 0.9}, "infeasible", ("x",))],
                        "baseline": every(cost_usd=(-0.001, -0.002, 0.0)),
                        "recommended": None, "estimator": "DR",
                        "config": load_config(Path(__file__).resolve().parents[2] / "configs" / "tune.toml"),
                        "tune": TuneConfig(policy="p", grid={"min_sla_hit": [0.5]})}.items():
        object.__setattr__(result, name, value)
    found = {(f.policy, f.metric): f for f in result.out_of_range}
    assert set(found) == {("baseline", "cost_usd"), ("a", "sla_hit")} and found[("a", "sla_hit")].value == 1.2
    print_tune_table(result)
    out = capsys.readouterr().out
    assert "!1.200" in out and "warning: a: DR sla_hit = 1.2 is impossible (must be [0, 1])" in out
    summary = {"baseline_values": {m: {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6} for m in METRICS},
               "out_of_range": [f.to_dict() for f in result.out_of_range],
               "points": [{"label": "a", "settings": {"min_sla_hit": 0.5}, "status": "safe", "reasons": [],
                           "fitted_values": None, "value": {m: {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6} for m in METRICS},
                           "relative": {"cost_usd": {"value": -1.0, "ci_low": -2.0, "ci_high": 0.0}}}]}
    assert _points_table(result, summary).count("⚠ impossible") == 2


def test_holdout_q_hat_never_sees_holdout_labels(simulated: tuple[Path, Path]) -> None:
    """Scrambling the logged outcomes of the last rows changes nothing for earlier hold-out rows (history only looks back)."""
    ds = BanditDataset.load(*simulated, sla_latency_ms=8000)
    train, _ = split_by_time(ds, 0.5)
    late, _ = split_by_time(ds, 0.8)
    late = ~late
    cfg = PredictorConfig(folds=2, n_estimators=15)
    first = fit_outcome_models(ds, cfg, train=train).q_hat
    order = np.arange(ds.n)
    order[late] = order[late][::-1]
    logs = ds.logs.with_columns(ds.logs[c].gather(order) for c in ("status", "ttft_ms", "latency_ms", "output_tokens", "cost_usd", "satisfaction"))
    other = dataclasses.replace(ds, logs=logs, outcomes=derive_outcomes(logs, ds.sla_latency_ms))
    second = fit_outcome_models(other, cfg, train=train).q_hat
    early_hold = ~train & ~late
    eligible = ds.eligible[early_hold]
    np.testing.assert_array_equal(first[early_hold][eligible], second[early_hold][eligible])
    assert not np.array_equal(first[late][ds.eligible[late]], second[late][ds.eligible[late]])  # the scramble did bite
    assert np.isfinite(first[ds.eligible]).all() and first.shape == (ds.n, ds.catalog.n_arms, len(METRICS))


def test_tune_config_errors_name_the_problem(tmp_path: Path, simulated: tuple[Path, Path]) -> None:
    path = _write(tmp_path, simulated)
    text = path.read_text()
    cases = {
        "cannot sweep 'objective'": text.replace("min_satisfaction = [0.0, 0.99]", "objective = [1]"),
        "at least one rollout target": text.replace("min_sla_hit = 0.3\n", ""),
        "non-empty list of numbers": text.replace("min_satisfaction = [0.0, 0.99]", "min_satisfaction = []"),
        "not a constrained policy": text.replace("train_fraction = 0.5", 'policy = "direct_official"\ntrain_fraction = 0.5'),
        "train_fraction must be in": text.replace("train_fraction = 0.5", "train_fraction = 0.99"),
    }
    for message, bad in cases.items():
        path.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_run_without_tune_section_is_a_clear_error(tmp_path: Path, simulated: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, simulated)
    path.write_text(path.read_text().split("[tune]")[0])
    assert main(["tune", str(path), "--out", str(tmp_path / "r"), "--quiet", "--no-tracking"]) == 2
    assert "needs a [tune] section" in capsys.readouterr().err


def test_ope_tune_end_to_end(tmp_path: Path, simulated: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, simulated)
    assert main(["tune", str(path), "--out", str(tmp_path / "r"), "--run-name", "sweep", "--quiet"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "r" / "sweep"
    summary = json.loads((run / "tune.json").read_text())
    assert len(summary["points"]) == 4 and summary["split"]["train_rows"] + summary["split"]["holdout_rows"] == 6000
    assert summary["alpha_per_setting"] == pytest.approx(2 * 0.1 / (4 * 1))  # 4 settings × 1 one-sided target
    statuses = {p["label"]: p["status"] for p in summary["points"]}
    assert statuses["min_satisfaction=0.99, min_sla_hit=0.3"] == "infeasible"   # no router reaches 0.99 satisfaction
    safe = [p for p in summary["points"] if p["status"] == "safe"]
    if safe:  # the recommendation is the cheapest safe point, by its hold-out estimate
        cheapest = min(safe, key=lambda p: p["value"]["cost_usd"]["value"])
        assert summary["recommended"] == cheapest["label"] and "Safe to roll out" in summary["verdict"]
    else:
        assert summary["recommended"] is None and summary["verdict"].startswith("No setting is safe")
    assert summary["verdict"] in out
    for p in summary["points"]:
        if p["status"] != "infeasible":
            ok = p["value"]["sla_hit"]["ci_low"] >= 0.3
            assert (p["status"] == "safe") == ok
            assert (run / summary["policy_files"][p["label"]]).exists()
    csv = pl.read_csv(run / "tune.csv")
    assert set(csv["point"]) == {"baseline"} | {p["label"] for p in summary["points"] if p["status"] != "infeasible"}
    html = (run / "tune.html").read_text()
    assert html.count("<svg") == 1 and "Pareto frontier" in html
    level = f"{100 * (1 - summary['alpha_per_setting']):.4g} %"       # one way of writing the level, everywhere
    assert f"intervals at {level} per setting" in html and (summary["recommended"] is None or f"whose {level} confidence" in summary["verdict"])
    assert "'Expected when fitted' is what the router expected" in html and "expected when fitted (training window)" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "mlflow ui --backend-store-uri" in out

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].data.tags["kind"] == "tune" and parents[0].data.tags["recommended"] == (summary["recommended"] or "none")
    fitted = [c for c in children if c.data.tags["status"] != "infeasible"]
    assert all(any(k.endswith("/sla_hit.ci_low") for k in c.data.metrics) for c in fitted)
    assert parents[0].data.tags["mlflow.note.content"] == summary["verdict"]
    assert parents[0].info.end_time - parents[0].info.start_time >= 1000 * sum(summary["timings_s"].values()) * 0.9


def test_tune_refuses_streaming(tmp_path: Path, simulated: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, simulated)
    assert main(["tune", str(path), "--streaming", "--out", str(tmp_path / "r"), "--quiet", "--no-tracking"]) == 2
    assert "--streaming is for ope run" in capsys.readouterr().err


def test_tune_refuses_a_satisfaction_target_without_feedback(tmp_path: Path, simulated: tuple[Path, Path],
                                                             capsys: pytest.CaptureFixture) -> None:
    logs, catalog = simulated
    bare = tmp_path / "nosat.parquet"
    pl.read_parquet(logs).with_columns(pl.lit(None, dtype=pl.Float64).alias("satisfaction")).write_parquet(bare)
    path = _write(tmp_path, (bare, catalog), extra="")
    path.write_text(path.read_text().replace("min_sla_hit = 0.3\n[tune.grid]", "min_sla_hit = 0.3\nmin_satisfaction = 0.7\n[tune.grid]"))
    assert main(["tune", str(path), "--out", str(tmp_path / "r"), "--quiet", "--no-tracking"]) == 2
    assert "no successful request in the log has a satisfaction value" in capsys.readouterr().err
