"""The vectorised lookups and grouped sums equal the plain per-arm / per-group computations they replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from estimators import DR, IPS, SNIPS, BanditFeedback, BaseEstimator, DRos, EstimatorInputError, SparseTarget, SwitchDR
from estimators.base import Partial
from estimators.batch import CELL_ROWS, Batch, Cells, Shared, prepare
from estimators.reduction import CellSums, Sums, all_pairs
from ope.data.catalog import Catalog, catalog_from_frame
from ope.data.dataset import BanditDataset
from ope.data.schema import CAPABILITY_PREFIX, NEED_PREFIX
from ope.evaluation.batch import policy_target
from ope.evaluation.tables import GroupEstimates, ShareSums
from policies.base import Pairs
from policies.baselines import Cheapest, Mixture, Uniform

T0 = datetime(2025, 10, 1, tzinfo=UTC)


def _catalog() -> Catalog:
    """Four arms of two models; arm b has three price snapshots (one without valid_from), arm c two."""
    rows = [
        ("a", "p1", "m1", True, 1.0, 2.0, 1000, True, None),
        ("b", "p2", "m1", False, 0.5, 1.0, 500, False, None),
        ("b", "p2", "m1", False, 0.4, 0.9, 500, False, T0 + timedelta(hours=5)),
        ("b", "p2", "m1", False, 0.3, 0.8, 500, False, T0 + timedelta(hours=10)),
        ("c", "p1", "m2", True, 2.0, 4.0, 2000, True, T0 + timedelta(hours=3)),
        ("c", "p1", "m2", True, 1.5, 3.0, 2000, True, T0 + timedelta(hours=7)),
        ("d", "p3", "m2", False, 0.1, 0.1, 100, True, T0),
    ]
    cols = ["arm", "provider", "model", "official", "price_in_per_mtok", "price_out_per_mtok", "context_tokens",
            "supports_tools", "valid_from"]
    return catalog_from_frame(pl.DataFrame(rows, schema=cols, orient="row"))


def _logs(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ts = [T0 + timedelta(minutes=int(m)) for m in rng.integers(-120, 14 * 60, n)]
    ts[:4] = [T0 + timedelta(hours=h) for h in (3, 5, 7, 10)]  # exactly on snapshot times
    listed = [None if u < 0.7 else rng.choice(["a", "b", "c", "d", "zz"], size=2).tolist() for u in rng.random(n)]
    return pl.DataFrame({
        "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
        "model": rng.choice(["m1", "m2", "m3"], n),
        "input_tokens": rng.integers(0, 2500, n),
        NEED_PREFIX + "tools": pl.Series([None if u < 0.1 else bool(u < 0.5) for u in rng.random(n)], dtype=pl.Boolean),
        "eligible_arms": pl.Series(listed, dtype=pl.List(pl.String)),
    })


def _prices_by_join(catalog: Catalog, ts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The former implementation: one backward as-of join per arm."""
    n = len(ts)
    p_in, p_out = np.empty((n, catalog.n_arms)), np.empty((n, catalog.n_arms))
    order = pl.DataFrame({"ts": ts, "_row": np.arange(n)}).sort("ts")
    for k, arm in enumerate(catalog.arms):
        snaps = catalog.prices.filter(pl.col("arm") == arm).sort("valid_from", nulls_last=False)
        snaps = snaps.with_columns(pl.col("valid_from").fill_null(pl.datetime(1970, 1, 1, time_zone="UTC")))
        joined = order.join_asof(snaps.select("valid_from", "price_in_per_mtok", "price_out_per_mtok"),
                                 left_on="ts", right_on="valid_from", strategy="backward")
        joined = joined.with_columns(pl.col("price_in_per_mtok").fill_null(snaps["price_in_per_mtok"][0]),
                                     pl.col("price_out_per_mtok").fill_null(snaps["price_out_per_mtok"][0]))
        rows = joined["_row"].to_numpy()
        p_in[rows, k], p_out[rows, k] = joined["price_in_per_mtok"].to_numpy(), joined["price_out_per_mtok"].to_numpy()
    return p_in, p_out


def _eligible_by_strings(catalog: Catalog, logs: pl.DataFrame) -> np.ndarray:
    """The former implementation: model names compared as an (n, K) object array."""
    arms = catalog.arms_frame
    mask = logs["model"].cast(pl.String).to_numpy()[:, None] == arms["model"].to_numpy()[None, :]
    mask &= logs["input_tokens"].to_numpy()[:, None] <= arms["context_tokens"].to_numpy()[None, :]
    for cap in catalog.capabilities:
        if NEED_PREFIX + cap in logs.columns:
            needs = logs[NEED_PREFIX + cap].fill_null(False).to_numpy().astype(bool)
            mask &= ~needs[:, None] | arms[CAPABILITY_PREFIX + cap].to_numpy()[None, :]
    if "eligible_arms" in logs.columns:
        given = logs["eligible_arms"].is_not_null().to_numpy()
        override = np.zeros_like(mask)
        for row in np.flatnonzero(given):
            for arm in logs["eligible_arms"][int(row)]:
                if arm in catalog.arms:
                    override[row, catalog.arms.index(arm)] = True
        mask[given] = override[given]
    return mask


@pytest.mark.parametrize("hours", [(-2, 14), (1, 2), (11, 12)])
def test_prices_equal_the_as_of_join(hours: tuple[int, int]) -> None:
    catalog = _catalog()
    logs = _logs(500).filter(pl.col("ts").is_between(T0 + timedelta(hours=hours[0]), T0 + timedelta(hours=hours[1])))
    got, want = catalog.prices_at(logs["ts"]), _prices_by_join(catalog, logs["ts"])
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def test_prices_of_one_snapshot_per_arm_are_a_row() -> None:
    catalog = catalog_from_frame(_catalog().arms_frame.drop("valid_from"))
    ts = _logs(50)["ts"]
    p_in, _ = catalog.prices_at(ts)
    np.testing.assert_array_equal(p_in, np.broadcast_to(catalog.arms_frame["price_in_per_mtok"].to_numpy(), p_in.shape))
    assert catalog.prices_at(ts[:0])[0].shape == (0, catalog.n_arms)


@pytest.mark.parametrize("columns", [None, ["ts", "model", "input_tokens"], ["ts", "model", "input_tokens", NEED_PREFIX + "tools"]])
def test_eligibility_equals_the_string_comparison(columns: list[str] | None) -> None:
    catalog = _catalog()
    logs = _logs(400, seed=1)
    logs = logs if columns is None else logs.select(columns)
    want = _eligible_by_strings(catalog, logs)
    np.testing.assert_array_equal(catalog.eligible(logs), want)
    arms = np.random.default_rng(2).integers(-1, catalog.n_arms, logs.height)
    rows = np.arange(logs.height)
    np.testing.assert_array_equal(catalog.eligible_for(logs, arms), (arms >= 0) & want[rows, np.maximum(arms, 0)])


def test_unknown_and_null_names_have_code_minus_one() -> None:
    catalog = _catalog()
    np.testing.assert_array_equal(catalog.arm_index(pl.Series(["d", None, "zz", "a"])), [3, -1, -1, 0])
    np.testing.assert_array_equal(catalog.model_codes(pl.Series(["m2", "m3", None])), [1, -1, -1])


# -- per-group sums of a streamed log (`ope.evaluation.tables`) -----------------------------------------------------------

def _dataset(simulated: tuple[Path, Path]) -> BanditDataset:
    logs, catalog = simulated
    return BanditDataset.load(logs, catalog, sla_latency_ms=10_000.0)


def _probabilities(ds: BanditDataset) -> dict[str, SparseTarget]:
    """Two policies at their eligible pairs, as a streamed batch computes them."""
    pairs = Pairs.of(ds.eligible)
    return {"uniform": policy_target(Uniform(), ds, pairs), "cheapest": policy_target(Mixture(policy=Cheapest().fit(ds), epsilon=0.1), ds, pairs)}


def _prepare_rows(fb: BanditFeedback, *, target: np.ndarray, q_hat: np.ndarray | None = None) -> Batch:
    """`prepare` for a batch that is part of a log (it may observe no satisfaction), as the streamed run prepares it."""
    return prepare(fb, target=target, q_hat=q_hat, require_observed=False)


def _value_batches(fb: BanditFeedback, probabilities: dict[str, SparseTarget], q_hat: np.ndarray | None) -> dict[str, Batch]:
    """Each policy prepared on a batch without a baseline: what `GroupEstimates.add` takes."""
    shared = Shared.of(fb, q_hat, require_observed=False)
    return {name: shared.batch(shared.policy(pi)) for name, pi in probabilities.items()}


def _groups_by_masks(est: GroupEstimates, ds: BanditDataset, fb: BanditFeedback, probabilities: dict[str, SparseTarget],
                     q_hat: np.ndarray | None) -> None:
    """The former `GroupEstimates.add`: every group prepared on its own."""
    columns = {"period": ds.logs["ts"].dt.truncate(est.every), **{c: ds.logs[c].cast(pl.String) for c in ("model", "task")}}
    for by, values in columns.items():
        for group in values.unique().to_list():
            mask = (values == group).to_numpy()
            est.counts[(by, group)] = est.counts.get((by, group), 0) + int(mask.sum())
            part_fb = fb.subset(mask)
            observed = (part_fb.weights[:, None] * ~np.isnan(part_fb.rewards)).sum(axis=0)
            est.observed[(by, group)] = est.observed.get((by, group), 0.0) + observed
            q = None if q_hat is None or not est.estimator.needs_q_hat else q_hat[mask]
            for name, pi in probabilities.items():
                part = est.estimator.accumulate(_prepare_rows(part_fb, target=pi.dense()[mask], q_hat=q))
                key = (by, group, name)
                est.parts[key] = est.parts[key] + part if key in est.parts else part


def _assert_partials_equal(a: Partial, b: Partial, rtol: float) -> None:
    """Equal sums to ``rtol``; the centred moments to ``rtol`` of their Cauchy–Schwarz bounds, as they may cancel to near 0."""
    for field_name in ("count", "total", "total2", "first", "low", "high"):
        np.testing.assert_allclose(getattr(a.sums, field_name), getattr(b.sums, field_name), rtol=rtol, atol=0)
    pairs = b.sums.pairs
    square = np.zeros(b.sums.first.shape)
    same = pairs[:, 0] == pairs[:, 1]
    square[pairs[same, 0]] = b.sums.cross[same]                                  # Σ W² (X − X̄)² per column
    bounds = {"first2": np.sqrt(square * b.sums.total2), "cross": np.sqrt(square[pairs[:, 0]] * square[pairs[:, 1]])}
    for field_name, bound in bounds.items():
        assert (np.abs(getattr(a.sums, field_name) - getattr(b.sums, field_name)) <= rtol * bound).all(), field_name
    for field_name in ("n", "s", "sw", "s2w", "s2w2", "s2", "max_w", "mass", "played", "modified"):
        np.testing.assert_allclose(getattr(a.target, field_name), getattr(b.target, field_name), rtol=rtol, atol=0)


@pytest.mark.parametrize("estimator", [SNIPS(), DR()])
def test_groups_cut_from_the_batch_equal_groups_prepared_alone(simulated: tuple[Path, Path], estimator: BaseEstimator) -> None:
    ds = _dataset(simulated)
    fb, probabilities = ds.to_feedback(), _probabilities(ds)
    q_hat = np.random.default_rng(3).random((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    fast, slow = GroupEstimates(estimator, "6h", 0.05), GroupEstimates(estimator, "6h", 0.05)
    fast.add(ds, fb, probabilities, _value_batches(fb, probabilities, q_hat))
    _groups_by_masks(slow, ds, fb, probabilities, q_hat)
    assert fast.counts == slow.counts and fast.parts.keys() == slow.parts.keys()
    for key in slow.observed:
        np.testing.assert_allclose(fast.observed[key], slow.observed[key], rtol=1e-12, atol=0)
    for key in slow.parts:
        _assert_partials_equal(fast.parts[key], slow.parts[key], rtol=1e-12)
    names = list(probabilities)
    assert_frame_equal(fast.slices(names), slow.slices(names), check_exact=False, rtol=1e-12, atol=0)
    assert_frame_equal(fast.breakdowns(names), slow.breakdowns(names), check_exact=False, rtol=1e-12, atol=0)


def test_two_halves_merged_equal_one_whole(simulated: tuple[Path, Path]) -> None:
    ds = _dataset(simulated)
    halves = [ds.subset(np.arange(ds.n) < ds.n // 2), ds.subset(np.arange(ds.n) >= ds.n // 2)]
    names = ["uniform", "cheapest"]
    whole_groups, whole_shares = GroupEstimates(SNIPS(), "6h", 0.05), ShareSums(ds.catalog.n_arms, names)
    merged_groups, merged_shares = GroupEstimates(SNIPS(), "6h", 0.05), ShareSums(ds.catalog.n_arms, names)
    for half in halves:
        worker_groups, worker_shares = GroupEstimates(SNIPS(), "6h", 0.05), ShareSums(ds.catalog.n_arms, names)
        for groups, shares in ((whole_groups, whole_shares), (worker_groups, worker_shares)):
            probabilities = _probabilities(half)
            groups.add(half, half.to_feedback(), probabilities, _value_batches(half.to_feedback(), probabilities, None))
            shares.add(half, probabilities)
        merged_groups.merge(worker_groups)
        merged_shares.merge(worker_shares)
    assert merged_groups.counts == whole_groups.counts and merged_groups.parts.keys() == whole_groups.parts.keys()
    for key in whole_groups.parts:
        _assert_partials_equal(merged_groups.parts[key], whole_groups.parts[key], rtol=1e-12)
    assert merged_groups.slices(names).equals(whole_groups.slices(names))
    assert merged_groups.breakdowns(names).equals(whole_groups.breakdowns(names))
    assert merged_shares.frame(ds.catalog).equals(whole_shares.frame(ds.catalog))
    one = GroupEstimates(SNIPS(), "6h", 0.05)
    one.add(ds, ds.to_feedback(), _probabilities(ds), _value_batches(ds.to_feedback(), _probabilities(ds), None))
    got, want = merged_groups.breakdowns(names), one.breakdowns(names)
    assert got.select("by", "group", "policy", "metric", "n").equals(want.select("by", "group", "policy", "metric", "n"))
    np.testing.assert_allclose(got["value"].to_numpy(), want["value"].to_numpy(), rtol=1e-9)


def test_cell_sums_added_into_groups_equal_the_groups_reduced_alone() -> None:
    rng = np.random.default_rng(4)
    x, w = rng.normal(5.0, 1.0, (3, 2, 400)), rng.random((3, 400))
    w[0, :50] = 0.0                                                     # a cell without weight in one metric
    codes = np.stack([rng.integers(0, 3, 400), 3 + rng.integers(0, 4, 400)])
    cells = Cells.of(codes)
    const, pairs = np.array([0.0, np.nan, np.nan]), all_pairs(3)
    got = CellSums.of(x[:, :, cells.order], w[:, cells.order], cells.bounds).grouped(cells.member, cells.n_groups, pairs=pairs, constants=const)
    for g in range(cells.n_groups):
        rows = np.flatnonzero((codes == g).any(axis=0))
        want = Sums.of(x[:, :, rows], w[:, rows], pairs=pairs, constants=const)
        for field_name in ("count", "total", "total2", "first", "first2", "cross", "low", "high"):
            np.testing.assert_allclose(getattr(got[g], field_name), getattr(want, field_name), rtol=1e-12, atol=1e-12)


def test_cells_cover_every_row_once_and_are_short() -> None:
    codes = np.stack([np.repeat([0, 1], 5000), np.tile([2, 3], 5000)])
    cells = Cells.of(codes)
    np.testing.assert_array_equal(np.sort(cells.order), np.arange(10_000))
    sizes = np.diff(cells.bounds, append=10_000)
    assert sizes.max() <= CELL_ROWS and (sizes > 0).all() and cells.n_groups == 4
    for p in range(2):
        np.testing.assert_array_equal(np.repeat(cells.member[p], sizes), codes[p, cells.order])


@pytest.mark.parametrize("estimator", [IPS(clip="auto"), DRos(shrinkage="auto")])
def test_grouped_partials_of_tuned_estimators_equal_the_groups_alone(simulated: tuple[Path, Path], estimator: BaseEstimator) -> None:
    ds = _dataset(simulated)
    fb, sparse = ds.to_feedback(), _probabilities(ds)["cheapest"]
    pi = sparse.dense()
    q_hat = np.random.default_rng(5).random((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    codes = np.stack([ds.logs["model"].cast(pl.String).rank("dense").to_numpy().astype(np.int64) - 1])
    cells = Cells.of(codes)
    got = estimator.accumulate_groups(_prepare_rows(fb, target=sparse, q_hat=q_hat), sparse, cells)
    for g, part in enumerate(got):
        rows = codes[0] == g
        want = estimator.accumulate(_prepare_rows(fb.subset(rows), target=pi[rows], q_hat=q_hat[rows]))
        _assert_partials_equal(part, want, rtol=1e-12)
        assert part.levels == want.levels and part.auto and (part.target.unsupported, part.target.n) == (want.target.unsupported, want.target.n)


def test_cell_blocks_cover_every_cell_once_when_the_last_cell_is_longer_than_a_block() -> None:
    for codes, rows in [(np.zeros((1, 3000), dtype=np.int64), 512), (np.repeat(np.arange(3), 1000)[None, :], 700),
                        (np.arange(10)[None, :], 3)]:
        cells = Cells.of(codes)
        blocks = cells.blocks(rows)
        assert all(lo < hi for lo, hi in blocks)
        assert [c for lo, hi in blocks for c in range(lo, hi)] == list(range(cells.bounds.size))
        covered = np.concatenate([np.arange(codes.shape[1])[cells.rows(lo, hi)] for lo, hi in blocks])
        np.testing.assert_array_equal(covered, np.arange(codes.shape[1]))


def test_direct_official_routes_its_cheapest_fallback_with_what_it_learned_in_fit() -> None:
    """A batch of requests without an official arm is routed the same whatever else is in the batch (streaming, Ray)."""
    from ope.data.validate import validate_logs
    from policies.baselines import DirectOfficial
    from tests.conftest import tiny_catalog, tiny_logs

    catalog = catalog_from_frame(tiny_catalog().with_columns(pl.when(pl.col("model") == "m2").then(False)
                                                             .otherwise(pl.col("official")).alias("official")))
    ds = BanditDataset.from_validated(validate_logs(tiny_logs(80), catalog), catalog, sla_latency_ms=10_000)
    policy = DirectOfficial(fallback="cheapest").fit(ds)
    whole = policy.action_probabilities(ds)
    assert policy.n_fallback_ > 0
    for half in (np.arange(ds.n) < 30, np.arange(ds.n) >= 30):
        np.testing.assert_array_equal(policy.action_probabilities(ds.subset(half)), whole[half])


# -- preparing many policies on one batch (`estimators.batch.Shared`) and the DR family's columns -------------------

def _sparse_log(rng: np.random.Generator, n: int = 3_000, k: int = 40, m: int = 3) -> tuple[BanditFeedback, np.ndarray, np.ndarray]:
    """A log where each row may go to 2–4 of 40 arms (sparse eligibility, as in a real catalog), with π and q̂."""
    eligible = np.zeros((n, k), dtype=bool)
    for j in range(4):
        eligible[np.arange(n), (np.arange(n) * 7 + j * 3) % k] = rng.random(n) < 0.8 if j else True
    pi = np.where(eligible, rng.random((n, k)), 0.0)
    pi /= pi.sum(axis=1, keepdims=True)
    actions = np.array([rng.choice(np.flatnonzero(row)) for row in eligible])
    q = rng.normal(size=(n, k, m))
    q[~eligible] = np.nan  # off the eligible set q̂ may be anything; it is never read
    fb = BanditFeedback(actions=actions, rewards=rng.random((n, m)), propensities=rng.uniform(0.2, 1.0, n), eligible=eligible, n_arms=k)
    return fb, pi, q


def test_direct_method_term_over_the_eligible_pairs_equals_the_dense_sum() -> None:
    fb, pi, q = _sparse_log(np.random.default_rng(8))
    prep, _ = Shared.of(fb, q).policy(pi)
    assert prep.dm is not None
    np.testing.assert_allclose(prep.dm, np.einsum("nk,nkm->nm", pi, np.nan_to_num(q, nan=0.0)), rtol=1e-12, atol=1e-15)
    q_bad = q.copy()
    q_bad[0, fb.actions[0], 1] = np.inf
    with pytest.raises(EstimatorInputError, match="finite on every eligible"):
        Shared.of(fb, q_bad)


def test_policies_prepared_once_give_the_same_partials_as_prepare() -> None:
    fb, pi, q = _sparse_log(np.random.default_rng(9))
    base = np.where(fb.eligible, 1.0, 0.0) / fb.eligible.sum(axis=1, keepdims=True)
    shared = Shared.of(fb, q)
    batch = shared.batch(shared.policy(pi), shared.policy(base))
    for est in (DR(), SNIPS(), DRos(shrinkage="auto")):
        _assert_partials_equal(est.accumulate(batch), est.accumulate(prepare(fb, target=pi, baseline=base, q_hat=q)), rtol=0)


@pytest.mark.parametrize("estimator", [DR(), SwitchDR(threshold="auto"), DRos(shrinkage="auto"), DRos(shrinkage=3.0)])
def test_dr_family_columns_written_at_once_equal_the_terms_level_by_level(estimator: BaseEstimator) -> None:
    fb, pi, q = _sparse_log(np.random.default_rng(10))
    batch = prepare(fb, target=pi, baseline=np.where(fb.eligible, 1.0, 0.0) / fb.eligible.sum(axis=1, keepdims=True), q_hat=q)
    levels, _ = estimator._levels()
    policies = [batch.target, batch.baseline]
    x, constants = estimator._columns(policies, levels)
    want_x, want_constants = BaseEstimator._columns(estimator, policies, levels)
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(constants, want_constants)
