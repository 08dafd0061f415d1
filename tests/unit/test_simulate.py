"""Tests of the simulator: schema, calibration to the published measurements, and exact truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from ope.data.schema import METRICS, REQUIRED_COLUMNS
from ope.errors import ConfigError, OPEError, SupportError
from ope.simulate import SimulatedLog, World, default_spec, simulate, write_simulation
from ope.simulate.clock import to_us
from ope.simulate.endpoints import arm_table, change_time_us
from ope.simulate.moments import sla_probability

SLA_MS = 10_000.0
ROWS, DAYS, SEED = 50_000, 7, 7
START = default_spec().start
END = START + dt.timedelta(days=DAYS)
EXTRA_COLUMNS = {"sample_weight": pl.Float64, "tenant": pl.String, "needs_tools": pl.Boolean, "needs_json": pl.Boolean}
KIND_DTYPE = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "datetime": pl.Datetime("us", "UTC")}


@pytest.fixture(scope="module")
def sim() -> SimulatedLog:
    """One shared 50k-row week of logs."""
    return simulate(rows=ROWS, days=DAYS, seed=SEED)


@pytest.fixture(scope="module")
def expected(sim: SimulatedLog) -> npt.NDArray[np.float64]:
    """(n, K, M) exact expectations of the shared log at the test SLA."""
    return sim.world.expected_outcomes(SLA_MS)


def derived_metrics(
    status: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    ttft_ms: npt.ArrayLike,
    latency_ms: npt.ArrayLike,
    cost_usd: npt.ArrayLike,
    satisfaction: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """(n, M) derived outcomes of DESIGN §4, written independently of the simulator."""
    ok = np.asarray(status) == "ok"
    ttft, latency = np.asarray(ttft_ms, float), np.asarray(latency_ms, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        throughput = np.where(ok, np.asarray(output_tokens, float) / ((latency - ttft) / 1000.0), 0.0)
    columns = {
        "cost_usd": np.asarray(cost_usd, float),
        "success": ok.astype(float),
        "satisfaction": np.nan_to_num(np.asarray(satisfaction, float), nan=0.0),
        "ttft_ms": ttft,
        "latency_ms": latency,
        "throughput_tps": throughput,
        "sla_hit": (ok & (latency <= SLA_MS)).astype(float),
    }
    return np.column_stack([columns[m] for m in METRICS])


def log_metrics(logs: pl.DataFrame) -> npt.NDArray[np.float64]:
    """Derived outcomes of every row of a log frame."""
    cols = ("status", "output_tokens", "ttft_ms", "latency_ms", "cost_usd", "satisfaction")
    return derived_metrics(*(logs[c].to_numpy() for c in cols))


def first_snapshots(catalog: pl.DataFrame) -> pl.DataFrame:
    """One catalog row per arm (its list price at the log start), sorted by arm."""
    return catalog.sort("valid_from").group_by("arm", maintain_order=True).first().sort("arm")


def prices_in_force(catalog: pl.DataFrame, arm: str, ts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Input/output price of ``arm`` in force at each ``ts``: the latest snapshot with valid_from <= ts."""
    snaps = catalog.filter(pl.col("arm") == arm).sort("valid_from")
    idx = np.searchsorted(snaps["valid_from"].to_numpy(), ts.to_numpy(), side="right") - 1
    return snaps["price_in_per_mtok"].to_numpy()[idx], snaps["price_out_per_mtok"].to_numpy()[idx]


def gini(shares: np.ndarray) -> float:
    """Σ_i Σ_j |s_i − s_j| / (2 n Σ s)."""
    return float(np.abs(shares[:, None] - shares[None, :]).sum() / (2 * shares.size * shares.sum()))


def cv(values: np.ndarray) -> float:
    """Coefficient of variation (population standard deviation over the mean)."""
    return float(np.std(values) / np.mean(values))


# --- schema -----------------------------------------------------------------------------------


def test_log_columns_and_dtypes(sim: SimulatedLog) -> None:
    expected = {c: KIND_DTYPE[k] for c, k in REQUIRED_COLUMNS.items()} | EXTRA_COLUMNS
    assert dict(sim.logs.schema) == expected
    assert sim.logs.height == ROWS
    assert sim.logs["request_id"].n_unique() == ROWS
    assert sim.logs["ts"].is_sorted()
    assert sim.logs["ts"].min() >= START
    assert sim.logs["ts"].max() < END


def test_failed_and_ok_rows_follow_the_schema(sim: SimulatedLog) -> None:
    logs = sim.logs
    failed = logs.filter(pl.col("status") != "ok")
    assert failed.height > 0
    assert (failed["output_tokens"] == 0).all()
    assert (failed["cost_usd"] == 0).all()
    assert failed["satisfaction"].is_null().all()
    assert (failed["ttft_ms"] == failed["latency_ms"]).all()
    ok = logs.filter(pl.col("status") == "ok")
    assert ok["satisfaction"].is_in([0.0, 1.0]).all()
    assert (ok["output_tokens"] >= 1).all()
    assert (ok["latency_ms"] > ok["ttft_ms"]).all()
    assert (ok["cost_usd"] > 0).all()
    statuses = {"ok", "rate_limited", "server_error", "timeout", "bad_request", "context_overflow"}
    assert set(logs["status"].unique()) <= statuses
    assert set(logs["sample_weight"].unique()) == {1.0, 2.0, 5.0}


def test_catalog_shape(sim: SimulatedLog) -> None:
    cat = sim.catalog
    assert dict(cat.schema) == {
        "arm": pl.String,
        "provider": pl.String,
        "model": pl.String,
        "official": pl.Boolean,
        "price_in_per_mtok": pl.Float64,
        "price_out_per_mtok": pl.Float64,
        "context_tokens": pl.Int64,
        "supports_tools": pl.Boolean,
        "supports_json": pl.Boolean,
        "valid_from": pl.Datetime("us", "UTC"),
    }
    assert sim.world.arms == tuple(sorted(cat["arm"].unique()))
    first = first_snapshots(cat)
    assert (first["valid_from"] == START).all()
    assert (first["arm"] == first["provider"] + "/" + first["model"]).all()
    per_model = first.group_by("model").agg(official=pl.col("official").sum(), others=(~pl.col("official")).sum())
    assert (per_model["official"] == 1).all()
    assert per_model["others"].is_between(2, 5).all()
    changes = cat.filter(pl.col("valid_from") > START)
    mid = changes.filter(pl.col("valid_from").is_between(START + (END - START) / 4, START + 3 * (END - START) / 4))
    assert mid.height >= 1


# --- calibration ------------------------------------------------------------------------------


def test_demand_is_concentrated_like_the_measurements(sim: SimulatedLog) -> None:
    shares = sim.logs["model"].value_counts(normalize=True)["proportion"].sort(descending=True).to_numpy()
    assert shares[0] == pytest.approx(0.32, abs=0.03)
    assert shares[:5].sum() == pytest.approx(0.874, abs=0.03)
    assert gini(shares) == pytest.approx(0.69, abs=0.05)


def test_price_varies_less_than_speed_on_the_log(sim: SimulatedLog) -> None:
    ok = sim.logs.filter(pl.col("status") == "ok").with_columns(
        tps=pl.col("output_tokens") / ((pl.col("latency_ms") - pl.col("ttft_ms")) / 1000)
    )
    speed = ok.group_by("arm").agg(ttft=pl.col("ttft_ms").median(), tps=pl.col("tps").median(), n=pl.len())
    table = (
        first_snapshots(sim.catalog)
        .join(speed, on="arm", how="left")
        .with_columns(blended=(3 * pl.col("price_in_per_mtok") + pl.col("price_out_per_mtok")) / 4)
    )
    checked = 0
    for (model,), arms in table.group_by("model"):
        if arms["n"].fill_null(0).min() < 100:
            continue  # too few rows on some arm for a stable median
        checked += 1
        price_cv = cv(arms["blended"].to_numpy())
        assert price_cv < cv(arms["ttft"].to_numpy()), model
        assert price_cv < cv(arms["tps"].to_numpy()), model
    assert checked >= 8


def test_price_varies_less_than_speed_in_the_spec() -> None:
    spec = default_spec()
    table = arm_table(spec)
    by_arm = {e.arm: e for e in spec.endpoints}
    blended = np.array([(3 * by_arm[a].price_in_per_mtok + by_arm[a].price_out_per_mtok) / 4 for a in table.arms])
    median_ttft = table.ttft_ms + 1000.0 * 1000 / table.prefill_tps  # a 1,000-token prompt at zero load
    for m, model in enumerate(spec.models):
        arms = table.model == m
        assert cv(blended[arms]) < cv(median_ttft[arms]), model.name
        assert cv(blended[arms]) < cv(table.tps[arms]), model.name


def test_prompts_are_heavy_tailed_and_task_specific(sim: SimulatedLog) -> None:
    by_task = sim.logs.group_by("task").agg(
        p50=pl.col("input_tokens").median(),
        p99=pl.col("input_tokens").quantile(0.99),
        out50=pl.col("output_tokens").filter(pl.col("status") == "ok").median(),
    )
    assert (by_task["p99"] / by_task["p50"] >= 5).all()
    assert by_task["p50"].max() / by_task["p50"].min() >= 5
    assert by_task["out50"].max() / by_task["out50"].min() >= 2
    assert (sim.logs["input_tokens"] > 32_768).mean() > 0.01
    model_mask = np.array(sim.logs["model"])[:, None] == np.array([a.split("/", 1)[1] for a in sim.world.arms])[None, :]
    assert (model_mask & ~sim.world.eligible).any(axis=1).mean() > 0.05  # context or capability limits bind


def test_diurnal_load_moves_latency_and_errors(sim: SimulatedLog) -> None:
    hours = sim.logs.with_columns(hour=pl.col("ts").dt.hour())
    peak = hours.filter(pl.col("hour").is_between(12, 17))
    night = hours.filter(pl.col("hour").is_between(0, 5))
    assert peak.height > 2 * night.height

    def error_rate(df: pl.DataFrame) -> float:
        return float((df["status"] != "ok").mean())

    def ok_median(df: pl.DataFrame, col: str) -> float:
        return float(df.filter(pl.col("status") == "ok")[col].median())

    assert error_rate(peak) > 1.4 * error_rate(night)
    assert ok_median(peak, "ttft_ms") > 1.15 * ok_median(night, "ttft_ms")
    assert ok_median(peak, "latency_ms") > 1.1 * ok_median(night, "latency_ms")


def test_error_rate_is_realistic_and_differs_by_provider(sim: SimulatedLog) -> None:
    assert 0.01 <= (sim.logs["status"] != "ok").mean() <= 0.05
    by_provider = (
        sim.logs.with_columns(provider=pl.col("arm").str.split("/").list.first())
        .group_by("provider")
        .agg(err=(pl.col("status") != "ok").mean(), n=pl.len())
        .filter(pl.col("n") >= 1000)
    )
    assert by_provider.height >= 5
    assert by_provider["err"].max() > 2 * by_provider["err"].min()


def test_provider_incident_raises_server_errors(sim: SimulatedLog) -> None:
    spec = sim.world.spec
    incident = next(i for i in spec.incidents if i.provider == "fireworks")
    begin = change_time_us(to_us(START), DAYS, incident.at_fraction)
    end = begin + int(incident.hours * 3_600_000_000)
    fw = sim.logs.filter(pl.col("arm").str.starts_with("fireworks/")).with_columns(
        inside=pl.col("ts").dt.epoch("us").is_between(begin, end, closed="left"),
        error=pl.col("status") == "server_error",
    )
    rates = fw.group_by("inside").agg(pl.col("error").mean(), n=pl.len()).sort("inside")
    outside_rate, inside_rate = rates["error"].to_list()
    assert rates["n"][1] >= 20
    assert inside_rate > 0.15 > 5 * outside_rate


def test_a_provider_has_lower_satisfaction_for_the_same_model(sim: SimulatedLog) -> None:
    ok = sim.logs.filter((pl.col("status") == "ok") & ~pl.col("needs_tools"))
    for model in ("qwen3-32b", "deepseek-v3.2"):
        rows = ok.filter(pl.col("model") == model).with_columns(quirky=pl.col("arm").str.starts_with("novita/"))
        stats = rows.group_by("quirky").agg(m=pl.col("satisfaction").mean(), n=pl.len()).sort("quirky")
        (m_other, m_quirky), (n_other, n_quirky) = stats["m"].to_list(), stats["n"].to_list()
        se = np.sqrt(m_other * (1 - m_other) / n_other + m_quirky * (1 - m_quirky) / n_quirky)
        assert m_other - m_quirky > max(0.05, 4 * se), model


# --- logging policy, eligibility, prices ------------------------------------------------------


def test_propensities_are_the_logging_probabilities(sim: SimulatedLog) -> None:
    world = sim.world
    probs = world.logging_probabilities
    arm_index = world.arm_index(sim.logs["arm"].to_list())
    np.testing.assert_array_equal(sim.logs["propensity"].to_numpy(), probs[np.arange(world.n), arm_index])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert (probs[~world.eligible] == 0).all()
    assert (probs[world.eligible] >= world.spec.epsilon / world.eligible.sum(axis=1).max()).all()
    assert world.eligible[np.arange(world.n), arm_index].all()


def test_eligibility_follows_the_catalog_rule(sim: SimulatedLog) -> None:
    cat = first_snapshots(sim.catalog)
    logs = sim.logs
    mask = (
        (logs["model"].to_numpy()[:, None] == cat["model"].to_numpy()[None, :])
        & (logs["input_tokens"].to_numpy()[:, None] <= cat["context_tokens"].to_numpy()[None, :])
        & (~logs["needs_tools"].to_numpy()[:, None] | cat["supports_tools"].to_numpy()[None, :])
        & (~logs["needs_json"].to_numpy()[:, None] | cat["supports_json"].to_numpy()[None, :])
    )
    np.testing.assert_array_equal(mask, sim.world.eligible)


def test_logging_policy_is_price_weighted_with_epsilon_uniform(sim: SimulatedLog) -> None:
    world, logs = sim.world, sim.logs
    weight = np.zeros((world.n, world.n_arms))
    for k, arm in enumerate(world.arms):
        p_in, p_out = prices_in_force(sim.catalog, arm, logs["ts"])
        weight[:, k] = np.where(world.eligible[:, k], ((3 * p_in + p_out) / 4) ** -2.0, 0.0)
    count = world.eligible.sum(axis=1, keepdims=True)
    oracle = 0.9 * weight / weight.sum(axis=1, keepdims=True) + np.where(world.eligible, 0.1 / count, 0.0)
    np.testing.assert_allclose(world.logging_probabilities, oracle, rtol=1e-12, atol=0)


def test_logged_cost_uses_the_price_in_force(sim: SimulatedLog) -> None:
    ok = sim.logs.filter(pl.col("status") == "ok")
    changed = sim.catalog.filter(pl.col("valid_from") > START)["arm"].unique().to_list()
    for arm in changed:
        rows = ok.filter(pl.col("arm") == arm)
        p_in, p_out = prices_in_force(sim.catalog, arm, rows["ts"])
        assert len(np.unique(p_in)) == 2  # the log has rows on both sides of the change
        cost = (rows["input_tokens"].to_numpy() * p_in + rows["output_tokens"].to_numpy() * p_out) / 1e6
        np.testing.assert_allclose(rows["cost_usd"].to_numpy(), cost, rtol=1e-12)
    joined = ok.sort("ts").join_asof(
        sim.catalog.sort("valid_from"),
        left_on="ts",
        right_on="valid_from",
        by="arm",
        strategy="backward",
        check_sortedness=False,
    )
    cost = (
        joined["input_tokens"] * joined["price_in_per_mtok"] + joined["output_tokens"] * joined["price_out_per_mtok"]
    ) / 1e6
    np.testing.assert_allclose(joined["cost_usd"].to_numpy(), cost.to_numpy(), rtol=1e-12)


# --- reproducibility and files ----------------------------------------------------------------


def test_same_seed_same_log_different_seed_different_log(tmp_path: Path) -> None:
    a, b, c = (simulate(rows=3_000, days=2, seed=s) for s in (3, 3, 4))
    assert a.logs.equals(b.logs) and a.catalog.equals(b.catalog)
    assert not a.logs.drop("request_id").equals(c.logs.drop("request_id"))
    digests = []
    for name in ("one", "two"):
        logs_path, catalog_path = write_simulation(tmp_path / name, rows=3_000, days=2, seed=3)
        digests.append((hashlib.sha256(logs_path.read_bytes()).digest(), catalog_path.read_bytes()))
    assert digests[0] == digests[1]


def test_written_files_read_back(tmp_path: Path) -> None:
    logs_path, catalog_path = write_simulation(tmp_path, rows=2_000, days=1, seed=5, logs_name="sample.parquet")
    assert logs_path == tmp_path / "sample.parquet" and catalog_path == tmp_path / "catalog.csv"
    sim = simulate(rows=2_000, days=1, seed=5)
    assert pl.read_parquet(logs_path).equals(sim.logs)
    catalog = pl.read_csv(catalog_path, try_parse_dates=True)
    assert catalog.schema["valid_from"] == pl.Datetime("us", "UTC")
    assert catalog.equals(sim.catalog)


# --- exact truth ------------------------------------------------------------------------------


def test_expected_outcomes_shape_and_support(sim: SimulatedLog, expected: np.ndarray) -> None:
    world = sim.world
    assert expected.shape == (world.n, world.n_arms, len(METRICS))
    assert (expected[~world.eligible] == 0).all()
    e = expected[world.eligible]
    success = e[:, METRICS.index("success")]
    assert ((success > 0.5) & (success <= 1)).all()
    for metric in ("satisfaction", "sla_hit"):
        assert (e[:, METRICS.index(metric)] <= success + 1e-12).all()
    assert (e >= 0).all()


def test_true_value_is_the_weighted_policy_average(sim: SimulatedLog, expected: np.ndarray) -> None:
    world = sim.world
    rng = np.random.default_rng(0)
    pi = np.where(world.eligible, rng.random(world.eligible.shape), 0.0)
    pi /= pi.sum(axis=1, keepdims=True)
    sw = world.sample_weight
    oracle = np.einsum("i,ik,ikm->m", sw, pi, expected) / sw.sum()
    value = world.true_value(pi, SLA_MS)
    np.testing.assert_allclose([value[m] for m in METRICS], oracle, rtol=1e-10)


def test_log_mean_agrees_with_true_value(sim: SimulatedLog, expected: np.ndarray) -> None:
    """The sampler and the closed forms agree: the logged weighted mean is within 4 SE of the truth."""
    world = sim.world
    truth = world.true_value(world.logging_probabilities, SLA_MS)
    y = log_metrics(sim.logs)
    mu = np.einsum("ik,ikm->im", world.logging_probabilities, expected)
    sw = sim.logs["sample_weight"].to_numpy()
    estimate = sw @ y / sw.sum()
    stderr = np.sqrt(((sw[:, None] * (y - mu)) ** 2).sum(axis=0)) / sw.sum()
    for m, metric in enumerate(METRICS):
        assert abs(estimate[m] - truth[metric]) < 4 * stderr[m], metric


def test_expected_outcomes_per_arm_by_resampling() -> None:
    """Redraw outcomes many times for fixed contexts, cycling every row through its eligible arms."""
    world = simulate(rows=3_000, days=3, seed=11).world
    REPS = 400  # noqa: N806
    cond = world.conditions
    pairs_expected = world.expected_pair_outcomes(SLA_MS)
    pairs_variance = world.pair_variances(SLA_MS)
    first_pair = np.searchsorted(cond.rows, np.arange(world.n))
    n_eligible = world.eligible.sum(axis=1)
    total = np.zeros(pairs_expected.shape)
    squares, fourths = np.zeros(pairs_expected.shape), np.zeros(pairs_expected.shape)
    draws = np.zeros(pairs_expected.shape[0])
    for rep in range(REPS):
        pair = first_pair + (rep + np.arange(world.n)) % n_eligible
        out = world.draw_outcomes(cond.cols[pair], np.random.default_rng(1_000 + rep))
        y = derived_metrics(
            out.status_names, out.output_tokens, out.ttft_ms, out.latency_ms, out.cost_usd, out.satisfaction
        )
        np.add.at(total, pair, y - pairs_expected[pair])
        np.add.at(squares, pair, (y - pairs_expected[pair]) ** 2)
        np.add.at(fourths, pair, (y - pairs_expected[pair]) ** 4)
        np.add.at(draws, pair, 1.0)
    assert draws.min() >= REPS // n_eligible.max()
    variance = pairs_variance * draws[:, None]
    per_arm = np.stack([np.bincount(cond.cols, total[:, m], world.n_arms) for m in range(len(METRICS))], axis=1)
    per_arm_var = np.stack([np.bincount(cond.cols, variance[:, m], world.n_arms) for m in range(len(METRICS))], axis=1)
    seen = per_arm_var > 0
    z = np.where(seen, per_arm / np.sqrt(np.where(seen, per_arm_var, 1.0)), 0.0)
    worst = np.unravel_index(np.abs(z).argmax(), z.shape)
    assert np.abs(z).max() < 4.5, (world.arms[worst[0]], METRICS[worst[1]], z[worst])
    overall = total.sum(axis=0) / np.sqrt(variance.sum(axis=0))
    assert np.abs(overall).max() < 4.0, dict(zip(METRICS, overall, strict=True))
    # the exact variances themselves: the drawn squared deviations sum to them, metric by metric, within 4 standard
    # errors of that sum (from the drawn fourth powers; heavy tails make it ~2 % for latency)
    z_var = (squares.sum(axis=0) - variance.sum(axis=0)) / np.sqrt(fourths.sum(axis=0) - (squares**2 / draws[:, None]).sum(axis=0))
    assert np.abs(z_var).max() < 4.0, dict(zip(METRICS, z_var.round(2), strict=True))


def test_sla_quadrature_matches_a_dense_grid() -> None:
    cond = simulate(rows=500, days=1, seed=2).world.conditions
    idx = np.arange(0, cond.rows.shape[0], 7)
    z = np.linspace(-9, 9, 40_001)
    pdf = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    for sla in (2_000.0, 10_000.0, 30_000.0):
        quad = sla_probability(cond.mu_ttft, cond.sigma_ttft, cond.mu_tps, cond.sigma_tps, cond.output_tokens, sla)[idx]
        log_tps = cond.mu_tps[idx, None] + cond.sigma_tps[idx, None] * z[None, :]
        remaining = sla - 1000.0 * cond.output_tokens[idx, None] * np.exp(-log_tps)
        inner = (np.log(np.where(remaining > 0, remaining, 1.0)) - cond.mu_ttft[idx, None]) / cond.sigma_ttft[idx, None]
        dense = np.trapezoid(np.where(remaining > 0, ndtr(inner), 0.0) * pdf, z, axis=1)
        np.testing.assert_allclose(quad, dense, atol=1e-4)


# --- invariants on many small worlds ----------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(min_value=1, max_value=400),
    days=st.floats(min_value=0.05, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_small_worlds_keep_their_invariants(rows: int, days: float, seed: int) -> None:
    sim = simulate(rows=rows, days=days, seed=seed)
    world = sim.world
    assert sim.logs.height == world.n == rows
    assert world.eligible.any(axis=1).all()
    arm_index = world.arm_index(sim.logs["arm"].to_list())
    logged = world.logging_probabilities[np.arange(rows), arm_index]
    np.testing.assert_array_equal(sim.logs["propensity"].to_numpy(), logged)
    np.testing.assert_allclose(world.logging_probabilities.sum(axis=1), 1.0, atol=1e-12)
    value = world.true_value(world.logging_probabilities, SLA_MS)
    assert 0 < value["success"] <= 1 and value["cost_usd"] > 0


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": 0}, r"The 'rows' parameter of simulate must be an int >= 1\. Got 0 instead\."),
        ({"rows": 10.5}, r"The 'rows' parameter of simulate must be an int >= 1\. Got 10\.5 instead\."),
        ({"days": 0}, r"The 'days' parameter of simulate must be a number in \(0, 3650\)\. Got 0 instead\."),
        ({"seed": -1}, r"The 'seed' parameter of simulate must be an int >= 0\. Got -1 instead\."),
    ],
    ids=["rows=0", "rows=float", "days=0", "seed<0"],
)
def test_simulate_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        simulate(**{"rows": 10, "days": 1, "seed": 0} | kwargs)


@pytest.fixture(scope="module")
def small_world() -> World:
    return simulate(rows=200, days=1, seed=1).world


def _uniform(world: World) -> np.ndarray:
    return world.eligible / world.eligible.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("make_pi", "sla", "error", "match"),
    [
        (lambda w: _uniform(w)[:-1], SLA_MS, OPEError, r"must have shape"),
        (lambda w: 2 * _uniform(w), SLA_MS, OPEError, r"rows must sum to 1"),
        (lambda w: np.full(w.eligible.shape, 1 / w.n_arms), SLA_MS, SupportError, r"ineligible arms"),
        (_uniform, 0.0, OPEError, r"'sla_latency_ms' parameter must be a float > 0"),
    ],
    ids=["shape", "row-sum", "ineligible", "sla"],
)
def test_true_value_rejects_bad_policies(
    small_world: World, make_pi: Callable[[World], np.ndarray], sla: float, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        small_world.true_value(make_pi(small_world), sla)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epsilon": 0.0}, r"'epsilon' of WorldSpec must be in \(0, 1\]"),
        ({"models": default_spec().models[:-1]}, r"shares of WorldSpec\.models must be positive and sum to 1"),
        ({"endpoints": default_spec().endpoints[1:]}, r"exactly one official endpoint"),
        ({"failures": default_spec().failures[1:]}, r"must give a timing for exactly"),
    ],
    ids=["epsilon", "shares", "official", "failures"],
)
def test_world_spec_rejects_bad_parameters(change: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(default_spec(), **change)
