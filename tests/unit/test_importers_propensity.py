"""Reconstructed propensities against the simulator's truth, and deterministic-router detection."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest

from estimators import IPS, BanditFeedback
from ope.data.catalog import catalog_from_frame
from ope.importers import detect_deterministic_router, import_logs
from ope.simulate import simulate
from ope.simulate.generate import draw_logged_arms, log_frame

SLA_MS = 8000.0
METRICS = ("cost_usd", "success", "latency_ms")
ERROR_CLASS = {"rate_limited": "RateLimitError", "timeout": "Timeout", "context_overflow": "ContextWindowExceededError",
               "bad_request": "BadRequestError", "content_filter": "ContentPolicyViolationError"}


def _spend_records(logs: pl.DataFrame) -> list[dict[str, object]]:
    """A simulated log rendered as LiteLLM_SpendLogs JSON records (what `/spend/logs` exports)."""
    out = []
    for r in logs.iter_rows(named=True):
        provider, model = r["arm"].split("/", 1)
        ok = r["status"] == "ok"
        start = r["ts"]
        body = {"model": model, "messages": [{"role": "user", "content": "..."}]}
        if r["needs_tools"]:
            body["tools"] = [{"type": "function", "function": {"name": "lookup"}}]
        if r["needs_json"]:
            body["response_format"] = {"type": "json_object"}
        meta = {} if ok else {"error_information": {"error_class": ERROR_CLASS.get(r["status"], "InternalServerError")}}
        out.append({
            "request_id": r["request_id"], "call_type": "acompletion", "spend": r["cost_usd"],
            "prompt_tokens": r["input_tokens"], "completion_tokens": r["output_tokens"],
            "startTime": start.isoformat(), "endTime": (start + timedelta(milliseconds=r["latency_ms"])).isoformat(),
            "completionStartTime": (start + timedelta(milliseconds=r["ttft_ms"])).isoformat() if ok else None,
            "model": f"{provider}/{model}", "model_group": model, "custom_llm_provider": provider,
            "metadata": meta, "request_tags": [f"task:{r['task']}"], "team_id": r["tenant"],
            "proxy_server_request": body, "status": "success" if ok else "failure",
        })
    return out


def _router_toml(arms: tuple[str, ...], weights: npt.NDArray[np.float64]) -> str:
    lines = ['[router]\nstrategy = "simple-shuffle"']
    lines += [f'[[router.deployments]]\narm = "{a}"\nweight = {w}' for a, w in zip(arms, weights, strict=True)]
    return "\n".join(lines) + "\n"


def _shuffle_log(seed: int, tmp: Path, rows: int = 3000) -> tuple[object, npt.NDArray[np.float64], pl.DataFrame, Path, Path]:
    """Simulated world, simple-shuffle logging probabilities, imported log, paths of log and catalog."""
    sim = simulate(rows=rows, days=1, seed=seed)
    world = sim.world
    weights = 1.0 + np.arange(world.n_arms) % 3            # deployment weights 1, 2, 3, 1, 2, 3, ...
    probs = world.eligible * weights[None, :]
    probs /= probs.sum(axis=1, keepdims=True)
    arm_rng, outcome_rng = np.random.default_rng(seed + 1000).spawn(2)
    arms = draw_logged_arms(probs, arm_rng)
    logs = log_frame(world, arms, world.draw_outcomes(arms, outcome_rng), seed)
    spend = tmp / f"spend_{seed}.ndjson"
    spend.write_text("\n".join(json.dumps(r) for r in _spend_records(logs)) + "\n")
    router = tmp / "router.toml"
    router.write_text(_router_toml(world.arms, weights))
    catalog = tmp / "catalog.csv"
    sim.catalog.write_csv(catalog, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    return sim, probs, logs, spend, router


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::estimators.SupportWarning")
def test_reconstructed_simple_shuffle_propensities_give_ips_within_ci_of_truth(tmp_path: Path) -> None:
    covered, checks = 0, 0
    for seed in range(5):
        sim, probs, logs, spend, router = _shuffle_log(seed, tmp_path)
        world = sim.world
        catalog = catalog_from_frame(sim.catalog)
        result = import_logs("litellm", spend, catalog=catalog, router_config=router, strict=True)
        imported = result.logs
        assert imported["request_id"].to_list() == logs["request_id"].to_list()
        actions = catalog.arm_index(imported["arm"])
        true_p = probs[np.arange(world.n), actions]
        np.testing.assert_allclose(imported["propensity"].to_numpy(), true_p, rtol=1e-12)
        np.testing.assert_array_equal(catalog.eligible(imported), world.eligible)
        outcome = imported.select(
            "cost_usd", (pl.col("status") == "ok").cast(pl.Float64).alias("success"), "latency_ms").to_numpy()
        fb = BanditFeedback(actions=actions, rewards=outcome, propensities=imported["propensity"].to_numpy(),
                            eligible=world.eligible, sample_weight=world.sample_weight)
        uniform = world.eligible / world.eligible.sum(axis=1, keepdims=True)
        for pi in (uniform, world.logging_probabilities):
            est = IPS().estimate(fb, target=pi)
            truth = world.true_value(pi, SLA_MS)
            for m, metric in enumerate(METRICS):
                covered += int(est.ci_low[m] <= truth[metric] <= est.ci_high[m])
                checks += 1
    print(f"coverage {covered}/{checks}")
    assert covered / checks >= 0.85, f"{covered} of {checks} 95% intervals cover the truth"


def test_reconstructed_propensities_equal_the_logging_probabilities(tmp_path: Path) -> None:
    sim, probs, _, spend, router = _shuffle_log(11, tmp_path, rows=800)
    catalog = catalog_from_frame(sim.catalog)
    imported = import_logs("litellm", spend, catalog=catalog, router_config=router).logs
    actions = catalog.arm_index(imported["arm"])
    np.testing.assert_allclose(imported["propensity"].to_numpy(), probs[np.arange(sim.world.n), actions], rtol=1e-12)


def _routed(kind: str, seed: int = 3) -> tuple[pl.DataFrame, npt.NDArray[np.bool_]]:
    """A simulated log re-routed by lowest blended price (deterministic) or simple-shuffle (random)."""
    sim = simulate(rows=3000, days=1, seed=seed)
    catalog = catalog_from_frame(sim.catalog)
    logs = sim.logs
    eligible = catalog.eligible(logs)
    if kind == "cheapest":
        p_in, p_out = catalog.prices_at(logs["ts"])
        price = np.where(eligible, (3 * p_in + p_out) / 4, np.inf)
        arms = price.argmin(axis=1)
    else:
        probs = eligible / eligible.sum(axis=1, keepdims=True)
        arms = draw_logged_arms(probs, np.random.default_rng(seed))
    return logs.with_columns(pl.Series("arm", np.array(catalog.arms)[arms])), eligible


def test_lowest_price_router_is_detected_as_deterministic() -> None:
    logs, eligible = _routed("cheapest")
    finding = detect_deterministic_router(logs, eligible)
    assert finding.deterministic
    assert finding.share_single_arm > 0.95
    assert finding.message.startswith("no overlap: only model-based estimates possible")
    assert finding.examples and finding.examples[0]["share"] >= 0.99


def test_randomised_router_is_not_flagged() -> None:
    logs, eligible = _routed("shuffle")
    finding = detect_deterministic_router(logs, eligible)
    assert not finding.deterministic
    assert finding.share_single_arm < 0.2
    assert finding.message.startswith("overlap present")


def test_detection_without_eligibility_uses_arms_seen_per_model() -> None:
    logs, _ = _routed("cheapest")
    assert detect_deterministic_router(logs).deterministic
    logs, _ = _routed("shuffle")
    assert not detect_deterministic_router(logs).deterministic
