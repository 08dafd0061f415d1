"""Speed and memory of the estimators at log scale (issue "Estimators", item 10; DESIGN §5, §7, §8).

What is measured, with K = 8 arms and M = 7 metrics on synthetic logs:

* the full evaluation — all seven estimators of ``estimators.ESTIMATORS`` with normal intervals,
  the target's value and its paired difference against a baseline policy (14 estimates) — at
  n = 10⁶ rows and at n = 10⁷ rows. Both stream: synthetic batches of 10⁶ rows (deterministic per
  batch index, with per-row uint64 keys) are prepared once, every estimator accumulates its partial
  sums on them, the sums are merged with ``+`` and ``finalize``-d once, the documented way to evaluate a log too big for memory (a
  (10⁷, 8, 7) ``q_hat`` alone would be 4.5 GB);
* the same batches generated and dropped ("generate only"), so the estimators' own cost can be
  quoted as a difference or a ratio;
* SNIPS on all 7 metrics with a Poisson bootstrap of B = 1,000 replicates at n = 10⁶, against
  SNIPS with a normal interval, and the Poisson multipliers alone (hashing B × n keys) and with
  their weighted sums.

Each case runs in a fresh worker process (multiprocessing, "spawn"): it imports and waits, the
timer covers only the work, and the worker's peak resident memory (VmHWM, the kernel's high-water
mark of the process) is attached to ``benchmark.extra_info`` together with a breakdown of the time.
Ratios between cases (10⁷ / 10⁶, bootstrap / normal, ...) go to ``extra_info`` and are printed in a
summary at the end. No test asserts a wall-clock time; the only resource assertion is that the
streamed evaluation stays below 4 GB.

Run the full-size benchmarks (about ten minutes on 2 cores today; see the summary table)::

    cd /work/main && python -m pytest tests/benchmarks --benchmark-enable -n 0 -q -s

Sizes come from ``LLM_OPE_BENCH_SCALE``: ``full`` (10⁶ / 10⁷ rows, batches of 10⁶) is the default
with ``--benchmark-enable -n 0``; ``small`` (10⁴ / 10⁵ rows, batches of 5·10⁴) is the default otherwise,
so the project's default ``python -m pytest`` (``--benchmark-disable`` in addopts) runs every case
once, quickly, as a plain test; ``medium`` (10⁵ / 10⁶) is in between. For example
``LLM_OPE_BENCH_SCALE=medium python -m pytest tests/benchmarks --benchmark-enable -n 0``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import resource
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest

from estimators import ESTIMATORS, ArmPooled, BanditFeedback, Bootstrap, Normal, SupportWarning
from estimators.batch import prepare
from estimators.resample import hash_keys, poisson_weight_sums

pytestmark = pytest.mark.benchmark

N_ARMS = 8
N_METRICS = 7
SEED = 20_251_001
N_BOOT = 1_000
#: the 4 GB target of the streamed 10⁷-row evaluation
MEMORY_LIMIT_MB = 4096.0
WORKER_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Scale:
    name: str
    n_base: int  # the "10⁶" case, and the bootstrap size
    n_large: int  # the "10⁷" case: ten times n_base, streamed
    batch: int  # rows per synthetic batch


SCALES = {
    "small": Scale("small", 10_000, 100_000, 50_000),
    "medium": Scale("medium", 100_000, 1_000_000, 250_000),
    "full": Scale("full", 1_000_000, 10_000_000, 1_000_000),
}


@pytest.fixture
def scale(benchmark: Any) -> Scale:
    """Full sizes when the benchmark plugin is enabled, small ones otherwise, unless overridden."""
    name = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if benchmark.disabled else "full")
    if name not in SCALES:
        raise pytest.UsageError(f"LLM_OPE_BENCH_SCALE must be one of {sorted(SCALES)}. Got {name!r}.")
    return SCALES[name]


# -- synthetic log batches (run in the worker) -------------------------------------------------------


def batches(n: int, batch: int) -> Iterator[tuple[int, int, int]]:
    """(batch index, first row, rows) covering n rows."""
    for index, start in enumerate(range(0, n, batch)):
        yield index, start, min(batch, n - start)


def make_batch(index: int, start: int, rows: int, *, with_q: bool = True) -> dict[str, Any]:
    """One batch of a synthetic log, a pure function of (SEED, index, start, rows).

    A stochastic logger (random weights over a random eligible set, arm 0 always eligible), a
    "cheapest"-like target (0.9 on one eligible arm per row, 0.1 spread over the eligible ones), a
    "direct official" baseline (0.95 on arm 0, 0.05 spread), rewards with arm and context effects
    (the last metric missing on 5 % of rows), sample weights 1 or 2, a reward model q̂ (rows, K, M)
    sharing the context effect, and keys hashed from the global row number.
    """
    k, m = N_ARMS, N_METRICS
    arm_means = np.random.default_rng(SEED).uniform(0.2, 0.8, size=(k, m))
    rng = np.random.default_rng([SEED, index])
    idx = np.arange(rows)
    eligible = rng.random((rows, k)) < 0.85
    eligible[:, 0] = True
    n_eligible = eligible.sum(axis=1, keepdims=True)
    logger = (rng.random((rows, k)) + 0.1) * eligible
    logger /= logger.sum(axis=1, keepdims=True)
    cum = np.cumsum(logger, axis=1)
    actions = (cum > (rng.random(rows) * cum[:, -1])[:, None]).argmax(axis=1)
    context = 0.2 * (rng.random((rows, m)) - 0.5)
    rewards = arm_means[actions] + context + 0.3 * (rng.random((rows, m)) - 0.5)
    rewards[rng.random(rows) < 0.05, m - 1] = np.nan
    spread = eligible / n_eligible
    target = 0.1 * spread
    target[idx, np.argmax(rng.random((rows, k)) * eligible, axis=1)] += 0.9
    baseline = 0.05 * spread
    baseline[:, 0] += 0.95
    q_hat = None
    if with_q:
        q_hat = np.empty((rows, k, m))
        np.add(arm_means[None, :, :], context[:, None, :], out=q_hat)
        q_hat += 0.05 * (rng.random((rows, k, 1)) - 0.5)
    return {
        "actions": actions,
        "rewards": rewards,
        "propensities": logger[idx, actions],
        "eligible": eligible,
        "sample_weight": np.where(rng.random(rows) < 0.1, 2.0, 1.0),
        "keys": hash_keys(np.arange(start, start + rows, dtype=np.uint64)),
        "target": target,
        "baseline": baseline,
        "q_hat": q_hat,
    }


def feedback(data: dict[str, Any]) -> BanditFeedback:
    return BanditFeedback(actions=data["actions"], rewards=data["rewards"], propensities=data["propensities"],
                          eligible=data["eligible"], sample_weight=data["sample_weight"], keys=data["keys"],
                          n_arms=N_ARMS)


# -- the workloads (run in the worker) -------------------------------------------------------------


def _generate(n: int, batch: int, with_q: bool = True) -> dict[str, Any]:
    """Generate every batch and drop it: the data cost included in the evaluation cases."""
    rows = 0
    for index, start, size in batches(n, batch):
        data = make_batch(index, start, size, with_q=with_q)
        rows += data["actions"].shape[0]
        del data
    return {"n": rows, "breakdown": {}}


def _one_batch(spec: tuple[int, int, int], estimators: list[str], with_q: bool, paired: bool,
               n_boot: int, arm_sums: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
    """Generate one batch, prepare it once, accumulate every estimator's partial sums on it."""
    index, start, size = spec
    chosen = {name: ESTIMATORS[name]() for name in estimators}
    secs: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    data = make_batch(index, start, size, with_q=with_q)
    t1 = time.perf_counter()
    fb = feedback(data)
    secs["feedback"] += time.perf_counter() - t1
    secs["generate"] += t1 - t0
    t = time.perf_counter()
    prepared = prepare(fb, target=data["target"], baseline=data["baseline"] if paired else None,
                       q_hat=data["q_hat"] if with_q else None)
    secs["prepare"] += time.perf_counter() - t
    out = {}
    for name, est in chosen.items():
        t = time.perf_counter()
        out[name] = est.accumulate(prepared, n_boot=n_boot, seed=0, arm_sums=arm_sums)
        secs[f"{name}.accumulate"] += time.perf_counter() - t
    return out, dict(secs)


def _evaluate(n: int, batch: int, estimators: list[str], kinds: list[str], n_boot: int = 0, workers: int = 1,
              arm_pooled: bool = False) -> dict[str, Any]:
    """Stream batches: prepare each once (``estimators.batch.prepare``), accumulate every estimator's
    partial sums on it, merge, and ``finalize`` once per kind — the value, the difference and the
    relative change all come from the same paired sums. With ``workers`` > 1, batches run in a
    process pool (each process generates its own batches, as workers reading their own partitions
    of a parquet lake would) and only the small partial sums travel back to be merged. ``arm_pooled``: the
    arm-pooled interval (the run's default), its per-arm sums accumulated too."""
    inference = ArmPooled() if arm_pooled else Bootstrap(n_replicates=n_boot, seed=0) if n_boot else Normal()
    chosen = {name: ESTIMATORS[name]() for name in estimators}
    with_q = any(est.needs_q_hat for est in chosen.values())
    paired = any(kind != "value" for kind in kinds)
    task = partial(_one_batch, estimators=estimators, with_q=with_q, paired=paired, n_boot=inference.n_boot,
                   arm_sums=inference.arm_sums)
    seconds: dict[str, float] = defaultdict(float)
    parts: dict[str, Any] = {}
    specs = list(batches(n, batch))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            results_iter = list(pool.map(task, specs))
    else:
        results_iter = (task(spec) for spec in specs)
    for out, secs in results_iter:
        for name, part in out.items():
            parts[name] = part if name not in parts else parts[name] + part
        for key, value in secs.items():
            seconds[key] += value
    t = time.perf_counter()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for name, part in parts.items():
            for kind in kinds:
                est = chosen[name].finalize(part, inference=inference, kind=kind)
                results[f"{name}.{kind}"] = {
                    "value": np.asarray(est.value).tolist(),
                    "stderr": np.asarray(est.stderr).tolist(),
                    "ci_low": np.asarray(est.ci_low).tolist(),
                    "ci_high": np.asarray(est.ci_high).tolist(),
                    "n": float(np.max(est.n)),
                    "ess": est.ess,
                }
    seconds["finalize"] = time.perf_counter() - t
    breakdown = dict(seconds)
    for name in chosen:
        breakdown[name] = sum(v for key, v in seconds.items() if key.startswith(f"{name}."))
    return {"n": n, "results": results, "breakdown": breakdown,
            "generate_seconds": seconds["generate"]}


def _poisson_multipliers(n: int, n_boot: int) -> dict[str, Any]:
    """Only the B × n Poisson(1) multipliers, hashed in the library's own blocks: weighted sums over
    zero data columns, so the matrix product does no work."""
    keys = hash_keys(np.arange(n, dtype=np.uint64))
    sums = poisson_weight_sums(keys, np.empty((n, 0)), n_boot, seed=0)
    return {"n": n, "breakdown": {}, "shape": list(sums.shape)}


def _poisson_weight_sums(n: int, n_boot: int, columns: int) -> dict[str, Any]:
    """Σ_i P_bi · data_i for B replicates over data (n, columns): multipliers plus the matrix product."""
    keys = hash_keys(np.arange(n, dtype=np.uint64))
    data = np.random.default_rng(SEED).random((n, columns))
    t = time.perf_counter()
    sums = poisson_weight_sums(keys, data, n_boot, seed=0)
    elapsed = time.perf_counter() - t
    return {"n": n, "breakdown": {"weight_sums": elapsed}, "finite": bool(np.isfinite(sums).all())}


WORKLOADS = {
    "generate": _generate,
    "evaluate": _evaluate,
    "poisson_multipliers": _poisson_multipliers,
    "poisson_weight_sums": _poisson_weight_sums,
}


# -- the worker process ------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB (VmHWM: peak resident set, VmRSS: current)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec.

    VmHWM is per address space, so it starts afresh at exec; ``ru_maxrss`` may carry the parent's
    high-water mark over a fork + exec and is only reported next to it.
    """
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _blas_threads() -> int | None:
    """Threads of the BLAS behind numpy's matrix products (they matter for the bootstrap)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return next((int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"), None)


def _worker_main(conn: Connection, workload: str, params: dict[str, Any]) -> None:
    try:
        fn = WORKLOADS[workload]
        conn.send(("ready", _peak_rss_mb()))
        conn.recv()
        load_before = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), os.times()
        out = fn(**params)
        out["seconds"] = time.perf_counter() - t0
        c1 = os.times()
        out["cpu_user_seconds"] = c1.user - c0.user
        out["cpu_system_seconds"] = c1.system - c0.system
        # other processes on the machine inflate wall time: keep the 1-minute load average around the case
        out["loadavg_1min"] = [load_before, os.getloadavg()[0]]
        out["blas_threads"] = _blas_threads()
        out["peak_rss_mb"] = _peak_rss_mb()
        out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # the largest peak of any child process (the 2-process case's pool workers)
        out["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        conn.send(("ok", out))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class Worker:
    """A fresh spawned process that imports, reports ready, runs one workload on "go" and exits."""

    def __init__(self, workload: str, params: dict[str, Any]) -> None:
        self.workload, self.params = workload, params
        self.proc: Any = None
        self.conn: Connection | None = None
        self.ready_rss_mb = math.nan

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # not a daemon: the 2-process case starts its own pool of workers
        self.proc = ctx.Process(target=_worker_main, args=(child, self.workload, self.params), daemon=False)
        self.proc.start()
        child.close()
        _, self.ready_rss_mb = self._receive("ready")

    def run(self) -> dict[str, Any]:
        assert self.conn is not None
        self.conn.send("go")
        return self._receive("ok")[1]

    def _receive(self, want: str) -> tuple[str, Any]:
        assert self.conn is not None
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while not self.conn.poll(1.0):
            if not self.proc.is_alive() and not self.conn.poll(0):
                raise RuntimeError(f"benchmark worker {self.workload} died (exit code {self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"benchmark worker {self.workload} gave no answer in {WORKER_TIMEOUT_S:.0f} s")
        status, payload = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark worker {self.workload} failed:\n{payload}")
        assert status == want, (status, want)
        return status, payload

    def close(self) -> None:
        if self.proc is not None:
            self.proc.join(timeout=60)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(timeout=10)
        if self.conn is not None:
            self.conn.close()


def run_case(benchmark: Any, results: dict[str, Any], case: str, workload: str, **params: Any) -> dict[str, Any]:
    """Benchmark one workload in a fresh worker (start-up and imports untimed); record and print it."""
    worker = Worker(workload, params)
    try:
        out: dict[str, Any] = benchmark.pedantic(worker.run, setup=worker.start, rounds=1, iterations=1)
    finally:
        worker.close()
    out["ready_rss_mb"] = worker.ready_rss_mb
    if "generate_seconds" in out:
        out["estimator_seconds"] = out["seconds"] - out["generate_seconds"]
    info = {k: v for k, v in out.items() if k != "results"}
    info.update({"case": case, "workload": workload, "arms": N_ARMS, "metrics": N_METRICS,
                 **{k: v for k, v in params.items() if k != "n"}})
    benchmark.extra_info.update(info)
    results["cases"][case] = out
    est = out.get("estimator_seconds")
    print(f"\n[bench] {case}: n={out['n']:,} {out['seconds']:.2f} s"
          + ("" if est is None else f" (estimators {est:.2f} s, generation {out['generate_seconds']:.2f} s)")
          + f", peak RSS {out['peak_rss_mb']:.0f} MB (after imports {out['ready_rss_mb']:.0f} MB)"
          + f"; CPU user {out['cpu_user_seconds']:.1f} s + system {out['cpu_system_seconds']:.1f} s"
          + f"; load average {out['loadavg_1min'][0]:.1f} -> {out['loadavg_1min'][1]:.1f}")
    if out.get("breakdown"):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(out["breakdown"].items()) if "." not in k)
        print(f"[bench]   breakdown (s): {parts}")
    return out


def add_ratio(benchmark: Any, results: dict[str, Any], name: str, num: tuple[str, str], den: tuple[str, str]) -> None:
    """ratio = results[num case][num field] / results[den case][den field], when both ran in this session."""
    cases = results["cases"]
    if num[0] not in cases or den[0] not in cases:
        print(f"[bench] ratio {name}: n/a ({den[0] if num[0] in cases else num[0]} did not run in this session)")
        return
    value = cases[num[0]][num[1]] / cases[den[0]][den[1]]
    results["ratios"][name] = value
    benchmark.extra_info.setdefault("ratios", {})[name] = value
    print(f"[bench] ratio {name} = {value:.3f}")


def _check_finite(out: dict[str, Any]) -> None:
    for key, est in out["results"].items():
        for field in ("value", "stderr", "ci_low", "ci_high"):
            assert np.isfinite(est[field]).all(), (key, field, est[field])


# -- the benchmarks ----------------------------------------------------------------------------------

SIZES = ["base", "10x"]
ALL = list(ESTIMATORS)


def test_batches_are_deterministic_and_valid() -> None:
    """The synthetic log is a pure function of the batch index: the benchmarks measure the same data."""
    a = make_batch(3, 3000, 1000)
    b = make_batch(3, 3000, 1000)
    for key, value in a.items():
        np.testing.assert_array_equal(value, b[key], err_msg=key)
    assert not np.array_equal(make_batch(4, 4000, 1000)["actions"], a["actions"])
    fb = feedback(a)  # validates shapes, propensities and the eligible set
    assert fb.n == 1000 and fb.n_metrics == N_METRICS and fb.n_arms == N_ARMS
    np.testing.assert_allclose(a["target"].sum(axis=1), 1.0)
    np.testing.assert_allclose(a["baseline"].sum(axis=1), 1.0)
    assert not (a["target"] * ~a["eligible"]).any() and not (a["baseline"] * ~a["eligible"]).any()


@pytest.mark.benchmark(group="estimators: generate only")
@pytest.mark.parametrize("size", SIZES)
def test_generate_only(benchmark: Any, bench_results: dict[str, Any], scale: Scale, size: str) -> None:
    n = scale.n_base if size == "base" else scale.n_large
    out = run_case(benchmark, bench_results, f"generate[{size}]", "generate", n=n, batch=scale.batch)
    assert out["n"] == n
    if size == "10x":
        add_ratio(benchmark, bench_results, "generate 10x / base time", ("generate[10x]", "seconds"),
                  ("generate[base]", "seconds"))


@pytest.mark.benchmark(group="estimators: 7 estimators x (value + difference), normal CI, streamed")
@pytest.mark.parametrize("size", SIZES)
def test_full_evaluation(benchmark: Any, bench_results: dict[str, Any], scale: Scale, size: str) -> None:
    n = scale.n_base if size == "base" else scale.n_large
    case = f"evaluate[{size}]"
    out = run_case(benchmark, bench_results, case, "evaluate", n=n, batch=scale.batch, estimators=ALL,
                   kinds=["value", "difference"])
    assert set(out["results"]) == {f"{e}.{k}" for e in ALL for k in ("value", "difference")}
    _check_finite(out)
    add_ratio(benchmark, bench_results, f"evaluate[{size}] / generate[{size}] time", (case, "seconds"),
              (f"generate[{size}]", "seconds"))
    if size == "10x":
        for field, label in (("seconds", "time"), ("estimator_seconds", "estimator time (minus generation)"),
                             ("peak_rss_mb", "peak RSS")):
            add_ratio(benchmark, bench_results, f"evaluate 10x / base {label}", (case, field), ("evaluate[base]", field))
        # Streaming keeps memory independent of n; the target is < 4 GB at 10⁷ rows.
        assert out["peak_rss_mb"] < MEMORY_LIMIT_MB, out["peak_rss_mb"]


@pytest.mark.benchmark(group="estimators: 7 estimators x (value + difference), normal CI, streamed")
def test_full_evaluation_on_two_processes(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    """The 10x case with batches on 2 worker processes: the machine's two cores."""
    case = "evaluate[10x, 2 processes]"
    out = run_case(benchmark, bench_results, case, "evaluate", n=scale.n_large, batch=scale.batch, estimators=ALL,
                   kinds=["value", "difference"], workers=2)
    _check_finite(out)
    add_ratio(benchmark, bench_results, "evaluate 10x: 2 processes / 1 process time", (case, "seconds"), ("evaluate[10x]", "seconds"))
    total_mb = out["peak_rss_mb"] + 2 * out["children_peak_rss_mb"]  # parent + both pool workers at their peaks
    benchmark.extra_info["total_peak_rss_mb"] = total_mb
    print(f"[bench] evaluate[10x, 2 processes]: parent + 2 workers peak RSS ≤ {total_mb:.0f} MB")
    assert total_mb < MEMORY_LIMIT_MB, total_mb


@pytest.mark.benchmark(group="estimators: DR, 7 metrics, value + difference, arm-pooled vs normal interval")
def test_dr_normal(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    out = run_case(benchmark, bench_results, "dr_normal", "evaluate", n=scale.n_base, batch=scale.batch,
                   estimators=["DR"], kinds=["value", "difference"])
    _check_finite(out)


@pytest.mark.benchmark(group="estimators: DR, 7 metrics, value + difference, arm-pooled vs normal interval")
def test_dr_arm_pooled(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    """The run's default interval: its per-arm sums are the extra work."""
    out = run_case(benchmark, bench_results, "dr_arm_pooled", "evaluate", n=scale.n_base, batch=scale.batch,
                   estimators=["DR"], kinds=["value", "difference"], arm_pooled=True)
    _check_finite(out)
    for field, label in (("seconds", "time"), ("estimator_seconds", "estimator time")):
        add_ratio(benchmark, bench_results, f"DR arm-pooled / normal {label}", ("dr_arm_pooled", field), ("dr_normal", field))
    normal = bench_results["cases"].get("dr_normal")
    if normal is not None:  # se = √max(V_empirical, V_arm-pooled): never below the normal interval's
        for kind in ("value", "difference"):
            pooled, plain = (np.asarray(r["results"][f"DR.{kind}"]["stderr"]) for r in (out, normal))
            assert (pooled >= plain * (1 - 1e-12)).all(), (kind, pooled / plain)


@pytest.mark.benchmark(group="estimators: SNIPS, 7 metrics, bootstrap vs normal")
def test_snips_normal(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    out = run_case(benchmark, bench_results, "snips_normal", "evaluate", n=scale.n_base, batch=scale.batch,
                   estimators=["SNIPS"], kinds=["value"])
    _check_finite(out)


@pytest.mark.benchmark(group="estimators: SNIPS, 7 metrics, bootstrap vs normal")
def test_snips_bootstrap(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    out = run_case(benchmark, bench_results, f"snips_bootstrap_B{N_BOOT}", "evaluate", n=scale.n_base,
                   batch=scale.batch, estimators=["SNIPS"], kinds=["value"], n_boot=N_BOOT)
    _check_finite(out)
    case = f"snips_bootstrap_B{N_BOOT}"
    for field, label in (("seconds", "time"), ("estimator_seconds", "estimator time")):
        add_ratio(benchmark, bench_results, f"SNIPS bootstrap / normal {label}", (case, field), ("snips_normal", field))
    normal = bench_results["cases"].get("snips_normal")
    if normal is not None:  # the same data and statistic: the two standard errors must roughly agree
        ratio = np.asarray(out["results"]["SNIPS.value"]["stderr"]) / np.asarray(normal["results"]["SNIPS.value"]["stderr"])
        benchmark.extra_info["stderr_bootstrap_over_normal"] = ratio.tolist()
        assert ((ratio > 0.75) & (ratio < 1.33)).all(), ratio


@pytest.mark.benchmark(group="estimators: Poisson multipliers")
def test_poisson_multipliers(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    out = run_case(benchmark, bench_results, f"poisson_multipliers_B{N_BOOT}", "poisson_multipliers",
                   n=scale.n_base, n_boot=N_BOOT)
    assert out["shape"] == [N_BOOT, 0]
    add_ratio(benchmark, bench_results, "Poisson multipliers / SNIPS bootstrap estimator time",
              (f"poisson_multipliers_B{N_BOOT}", "seconds"), (f"snips_bootstrap_B{N_BOOT}", "estimator_seconds"))


@pytest.mark.benchmark(group="estimators: Poisson multipliers")
def test_poisson_weight_sums(benchmark: Any, bench_results: dict[str, Any], scale: Scale) -> None:
    # SNIPS value on 7 metrics: 3 terms x 7 metrics of W·X plus the 7 weights W
    columns = 3 * N_METRICS + N_METRICS
    out = run_case(benchmark, bench_results, f"poisson_weight_sums_B{N_BOOT}", "poisson_weight_sums",
                   n=scale.n_base, n_boot=N_BOOT, columns=columns)
    assert out["finite"]
    add_ratio(benchmark, bench_results, "Poisson weight sums / SNIPS bootstrap estimator time",
              (f"poisson_weight_sums_B{N_BOOT}", "seconds"), (f"snips_bootstrap_B{N_BOOT}", "estimator_seconds"))
