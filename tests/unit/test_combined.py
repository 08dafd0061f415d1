"""`evaluate_all` / `partial_all` / `finalize_all` equal one `estimate` call per estimator, to 1e-9, and merge."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import numpy as np
import pytest

import estimators.batch as batch_module
from estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    BanditFeedback,
    BaseEstimator,
    Bootstrap,
    DRos,
    EmpiricalBernstein,
    Estimate,
    EstimatorInputError,
    Normal,
    Partials,
    SparseTarget,
    SupportWarning,
    SwitchDR,
    evaluate_all,
    finalize_all,
    partial_all,
)
from estimators.batch import Shared
from estimators.reduction import Sums, all_pairs

FIELDS = ("value", "stderr", "ci_low", "ci_high", "n")
SETS = {
    "seven": [IPS(), SNIPS(), DM(), DR(), SNDR(), SwitchDR(threshold=3.0), DRos(shrinkage=2.0)],
    "tuned": [IPS(clip="auto"), SwitchDR(threshold="auto"), DRos(shrinkage="auto"), SNIPS()],
    "clipped": [IPS(clip=2.0), DRos(shrinkage=0.0)],
}
INFERENCES = [Normal(), EmpiricalBernstein(), Bootstrap(n_replicates=64, seed=3)]


def _log(rng: np.random.Generator, n: int, *, k: int = 5, m: int = 3, weighted: bool = True) -> dict[str, Any]:
    """A stochastic logger on an eligible set, two targets on it, rewards with a missing metric, q̂ and keys."""
    eligible = rng.random((n, k)) < 0.8
    eligible[:, 0] = True
    logger = rng.random((n, k)) * eligible + 0.05 * eligible
    logger /= logger.sum(axis=1, keepdims=True)
    a = (logger.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    means = rng.random((k, m))
    r = means[a] + rng.normal(0, 0.3, (n, m))
    r[rng.random(n) < 0.1, m - 1] = np.nan
    q = means[None] + rng.normal(0, 0.1, (n, k, m))
    logits = np.where(eligible, 3 * q[:, :, 0], -np.inf)  # a softmax target on the eligible arms
    target = np.exp(logits - logits.max(axis=1, keepdims=True))
    target /= target.sum(axis=1, keepdims=True)
    baseline = rng.dirichlet(np.ones(k), size=n) * eligible
    baseline /= baseline.sum(axis=1, keepdims=True)
    fb = BanditFeedback(actions=a, rewards=r, propensities=logger[np.arange(n), a], eligible=eligible,
                        sample_weight=rng.choice([1.0, 2.0, 5.0], size=n) if weighted else None,
                        keys=rng.integers(0, 2**63, size=n).astype(np.uint64), n_arms=k)
    return {"fb": fb, "target": target, "baseline": baseline, "q": q}


def _one_by_one(est: BaseEstimator, d: dict[str, Any], kind: str, inference: Any, alpha: float = 0.05) -> Estimate:
    if kind == "value":
        return est.estimate(d["fb"], target=d["target"], q_hat=d["q"], inference=inference, alpha=alpha)
    return est.estimate_difference(d["fb"], target=d["target"], baseline=d["baseline"], q_hat=d["q"],
                                   inference=inference, alpha=alpha, relative=kind == "relative")


def assert_same(got: Estimate, want: Estimate) -> None:
    """Every number of two estimates agrees to 1e-9 (relative), and so do their diagnostics."""
    for field in FIELDS:
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-9, atol=1e-12, err_msg=field)
    for alpha in (0.1, 0.32):
        np.testing.assert_allclose(got.ci(alpha), want.ci(alpha), rtol=1e-9, atol=1e-12, err_msg=f"ci({alpha})")
    if hasattr(want.fit, "replicates"):
        np.testing.assert_allclose(got.fit.replicates, want.fit.replicates, rtol=1e-9, atol=1e-12)  # type: ignore[attr-defined]
    assert (got.estimator, got.kind, got.inference, got.alpha) == (want.estimator, want.kind, want.inference, want.alpha)
    g, w = got.diagnostics.to_dict(), want.diagnostics.to_dict()
    assert g.keys() == w.keys()
    for key, value in w.items():
        if isinstance(value, float):
            assert g[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert g[key] == value, key


@pytest.mark.parametrize("weighted", [True, False], ids=["sample_weight", "unweighted"])
@pytest.mark.parametrize("kind", ["value", "difference", "relative"])
@pytest.mark.parametrize("inference", INFERENCES, ids=lambda i: i.name)
@pytest.mark.parametrize("chosen", list(SETS), ids=str)
def test_equals_one_call_per_estimator(
    chosen: str, inference: Any, kind: str, weighted: bool, rng: np.random.Generator
) -> None:
    d = _log(rng, 3000, weighted=weighted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        out = evaluate_all(d["fb"], target=d["target"], q_hat=d["q"], estimators=SETS[chosen], inference=inference,
                           baseline=None if kind == "value" else d["baseline"], kind=kind, alpha=0.1)
        want = {est.name: _one_by_one(est, d, kind, inference, alpha=0.1) for est in SETS[chosen]}
    assert list(out) == [est.name for est in SETS[chosen]]
    for name, est in want.items():
        assert_same(out[name], est)


@pytest.mark.parametrize("inference", INFERENCES, ids=lambda i: i.name)
def test_one_metric_and_a_sparse_target(inference: Any, rng: np.random.Generator) -> None:
    """Scalar rewards give scalar estimates; a `SparseTarget` gives the same numbers as its matrix."""
    d = _log(rng, 2000, m=1)
    fb = d["fb"]
    scalar = BanditFeedback(actions=fb.actions, rewards=fb.rewards[:, 0], propensities=fb.propensities,
                            eligible=fb.eligible, sample_weight=fb.sample_weight, keys=fb.keys, n_arms=fb.n_arms)
    d = d | {"fb": scalar, "q": d["q"][:, :, 0]}
    chosen = SETS["seven"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        out = evaluate_all(scalar, target=SparseTarget.of(d["target"]), q_hat=d["q"], estimators=chosen,
                           inference=inference)
        for est in chosen:
            assert isinstance(out[est.name].value, float)
            assert_same(out[est.name], _one_by_one(est, d, "value", inference))


def test_batches_merge_to_the_whole(rng: np.random.Generator) -> None:
    """`Partials` of uneven batches, pickled and added in any order, finalize to the whole log's estimates for every kind."""
    d = _log(rng, 4000)
    fb, boot = d["fb"], Bootstrap(n_replicates=50, seed=1)
    chosen = SETS["seven"]
    bounds = [(0, 20), (20, 1500), (1500, 1530), (1530, 4000)]
    total: Partials | None = None
    for lo, hi in reversed(bounds):
        rows = np.arange(lo, hi)
        part = partial_all(fb.subset(rows), target=d["target"][rows], baseline=d["baseline"][rows], q_hat=d["q"][rows],
                           estimators=chosen, n_boot=boot.n_boot, seed=boot.seed)
        part = pickle.loads(pickle.dumps(part))  # as partial sums travel back from worker processes
        total = part if total is None else total + part
    assert total is not None and set(total) == {est.name for est in chosen} and len(total) == len(chosen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for kind in ("value", "difference", "relative"):
            merged = finalize_all(total, inference=boot, kind=kind)  # type: ignore[arg-type]
            for est in chosen:
                assert_same(merged[est.name], _one_by_one(est, d, kind, boot))


def test_a_partial_of_partials_merges_with_one_estimators_partial(rng: np.random.Generator) -> None:
    """Each entry is the estimator's own `Partial`: it adds to one from ``estimator.partial`` on other rows."""
    d = _log(rng, 3000)
    fb, rows, rest = d["fb"], np.arange(1000), np.arange(1000, 3000)
    both = partial_all(fb.subset(rows), target=d["target"][rows], q_hat=d["q"][rows], estimators=SETS["seven"], n_boot=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for est in SETS["seven"]:
            part = both[est.name] + est.partial(fb.subset(rest), target=d["target"][rest], q_hat=d["q"][rest], n_boot=40)
            got = est.finalize(part, inference=Bootstrap(n_replicates=40))
            assert_same(got, est.estimate(fb, target=d["target"], q_hat=d["q"], inference=Bootstrap(n_replicates=40)))


def test_ips_and_snips_need_no_q_hat(rng: np.random.Generator) -> None:
    d = _log(rng, 500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        out = evaluate_all(d["fb"], target=d["target"], estimators=[IPS(), SNIPS()])
        assert_same(out["SNIPS"], SNIPS().estimate(d["fb"], target=d["target"]))


def test_policy_q_in_blocks_equals_the_whole_log_sum(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Σ_a π q̂ read a few rows at a time equals the per-pair sum (empty rows, block edges, NaN off the eligible set)."""
    d = _log(rng, 300)
    sp = SparseTarget.of(d["target"] * (rng.random(300) < 0.9)[:, None])  # some rows without pairs
    whole = sp.per_row(sp.values[:, None] * d["q"][sp.rows, sp.arms])
    monkeypatch.setattr(batch_module, "BLOCK_ROWS", 7)
    np.testing.assert_allclose(batch_module._policy_q(sp, d["q"]), whole, rtol=1e-14, atol=1e-15)
    q = d["q"].copy()
    q[5, ~d["fb"].eligible[5]] = np.nan  # q̂ off the eligible set is never read
    eligible = SparseTarget.of(d["target"])
    by_pair = eligible.per_row(eligible.values[:, None] * q[eligible.rows, eligible.arms])
    np.testing.assert_allclose(batch_module._policy_q(eligible, q), by_pair, rtol=1e-14, atol=1e-15)
    assert batch_module._finite_where_eligible(q, d["fb"].eligible)
    q[299, 0] = np.inf
    assert not batch_module._finite_where_eligible(q, d["fb"].eligible)
    with pytest.raises(EstimatorInputError, match="q_hat must be finite"):
        Shared.of(d["fb"], q)


def test_sums_block_is_the_sums_of_those_columns(rng: np.random.Generator) -> None:
    """Columns reduced side by side and split equal the columns reduced alone."""
    x, w = rng.normal(size=(2, 5, 400)), rng.random((2, 400))
    keys = rng.integers(0, 2**63, size=400).astype(np.uint64)
    pairs = np.concatenate([all_pairs(2), all_pairs(3) + 2])
    both = Sums.of(x, w, pairs=pairs, constants=np.full(5, np.nan), keys=keys, n_boot=20)
    alone = Sums.of(x[:, 2:], w, pairs=all_pairs(3), constants=np.full(3, np.nan), keys=keys, n_boot=20)
    part = both.block(2, 5)
    np.testing.assert_array_equal(part.pairs, alone.pairs)
    for field in ("first", "first2", "cross", "low", "high", "boot", "boot_total"):
        np.testing.assert_allclose(getattr(part, field), getattr(alone, field), rtol=1e-12, atol=1e-12, err_msg=field)


ERRORS = [
    ({"estimators": []}, EstimatorInputError, "non-empty sequence of estimators"),
    ({"estimators": [IPS, DR()]}, EstimatorInputError, "non-empty sequence of estimators"),
    ({"estimators": [SwitchDR(threshold=5.0), SwitchDR(threshold="auto")]}, EstimatorInputError,
     r"distinct names: results are keyed by name. Got \['SwitchDR'\]"),
    ({"kind": "ratio"}, EstimatorInputError, r"kind must be one of \['value', 'difference', 'relative'\]. Got 'ratio'"),
    ({"kind": "difference"}, EstimatorInputError, "kind='difference' needs a baseline"),
    ({"kind": "value", "baseline": True}, EstimatorInputError, "kind='value' takes no baseline"),
    ({"q_hat": None}, EstimatorInputError, r"DM needs q_hat, the reward model's predictions of shape \(n, K\[, M\]\)"),
]


@pytest.mark.parametrize(("changes", "error", "match"), ERRORS, ids=[m for _, _, m in ERRORS])
def test_errors(changes: dict[str, Any], error: type[Exception], match: str, rng: np.random.Generator) -> None:
    d = _log(rng, 200)
    args: dict[str, Any] = {"target": d["target"], "q_hat": d["q"], "estimators": [IPS(), DM()]} | changes
    if args.get("baseline") is True:
        args["baseline"] = d["baseline"]
    with pytest.raises(error, match=match):
        evaluate_all(d["fb"], **args)


def test_merge_and_finalize_errors(rng: np.random.Generator) -> None:
    d = _log(rng, 200)
    a = partial_all(d["fb"], target=d["target"], q_hat=d["q"], estimators=[IPS(), DM()])
    b = partial_all(d["fb"], target=d["target"], q_hat=d["q"], estimators=[IPS(clip=2.0), DM()])
    with pytest.raises(EstimatorInputError, match="Only partial sums of the same estimators can be merged"):
        a + b  # noqa: B018
    with pytest.raises(EstimatorInputError, match="asks for 10 replicates with seed 0, but the partial sums hold 0"):
        finalize_all(a, inference=Bootstrap(n_replicates=10))
    with pytest.raises(EstimatorInputError, match="A 'difference' needs partial sums accumulated with a baseline"):
        finalize_all(a, kind="difference")
    with pytest.raises(KeyError):
        a["DR"]  # noqa: B018


def _splitmix_oracle(keys: np.ndarray, replicates: np.ndarray, seed: int) -> np.ndarray:
    """The multipliers as first written: the full SplitMix64 finalizer, top 16 bits through the Poisson(1) table."""
    from estimators.resample import _GOLDEN, _LUT, hash_keys

    def mix(x: np.ndarray) -> np.ndarray:
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)
        return x ^ (x >> np.uint64(31))

    salt = hash_keys(replicates.astype(np.uint64) + np.uint64(seed) * np.uint64(1_000_003))
    with np.errstate(over="ignore"):
        x = mix((keys[None, :] ^ salt[:, None]) * _GOLDEN)
    return _LUT[(x >> np.uint64(48)).astype(np.int64)]


@pytest.mark.parametrize("seed", [0, 11])
def test_buffered_multipliers_equal_the_plain_splitmix_formula(seed: int, rng: np.random.Generator) -> None:
    """The buffered hashing (no last xorshift, written in place) gives exactly the multipliers and sums of the formula."""
    from estimators.resample import poisson_multipliers, poisson_weight_sums

    keys = rng.integers(0, 2**63, size=1500).astype(np.uint64)
    want = _splitmix_oracle(keys, np.arange(600), seed)
    np.testing.assert_array_equal(poisson_multipliers(keys, np.arange(600), seed=seed), want)
    data = rng.normal(size=(1500, 4))
    np.testing.assert_allclose(poisson_weight_sums(keys, data, 600, seed=seed), want @ data, rtol=1e-12, atol=1e-9)
