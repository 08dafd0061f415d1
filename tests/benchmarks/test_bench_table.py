"""The estimator table at once (issue 19, item 2): `evaluate_all` beside one `estimate` call per estimator.

What is measured, in one run, on one synthetic log of n rows (10⁶ at full size), K = 8 arms, M = 7
metrics (the last missing on 5 % of rows), sample weights, an eligible set, per-row keys, q̂ of shape
(n, K, M) and a softmax target on the eligible arms (π ∝ exp(5 q̂(x, a, 0))): the table of the seven
estimators (IPS, SNIPS, DM, DR, SNDR, Switch-DR λ = 50, DRos λ = 50) × 7 metrics, with normal
intervals and with a Poisson bootstrap of B = 1,000, each way:

* ``all``: ``evaluate_all(fb, target=pi, q_hat=q, estimators=[...], inference=...)``;
* ``loop``: ``{e.name: e.estimate(fb, target=pi, q_hat=q, inference=...) for e in estimators}``;
* ``loop_blas1``: the same loop with one BLAS thread (``threadpoolctl``), as `ope run` evaluates and as
  ``evaluate_all`` reduces its rows: on a shared 2-core machine two BLAS threads slow the many small
  products down several times, so this case separates that from what sharing the work gains.

Each case runs in a fresh worker process ("spawn") that builds the log before the timer starts. Its
time covers the estimates only; its peak resident memory is given twice: since the process started
(VmHWM, building the log included) and while estimating (VmHWM reset through ``/proc/self/clear_refs``
once the log is built, so it counts the log held in memory and what the estimators add). Goals
(issue 19): normal table ≤ 2 s, bootstrap table ≤ 27 s, peak RSS ≤ 1.5 GB. No test asserts a time;
the loop's estimates must equal ``evaluate_all``'s to 1e-9, and at full size ``evaluate_all``'s peak
must stay under 1.5 GB.

Run at full size (``LLM_OPE_BENCH_SCALE`` = small / medium / full as in ``test_bench_estimators``)::

    python -m pytest tests/benchmarks/test_bench_table.py --benchmark-enable -n 0 -q -s
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
import warnings
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from estimators import DM, DR, IPS, SNDR, SNIPS, Bootstrap, DRos, Normal, SupportWarning, SwitchDR, evaluate_all
from tests.benchmarks.test_bench_estimators import (
    N_BOOT,
    SCALES,
    Scale,
    _blas_threads,
    _peak_rss_mb,
    _status_mb,
    feedback,
    make_batch,
)

pytestmark = pytest.mark.benchmark

#: issue 19's goals on this 2-core machine at 10⁶ rows
GOALS = {"normal": 2.0, "bootstrap": 27.0}
MEMORY_GOAL_MB = 1536.0
WORKER_TIMEOUT_S = 1800.0
FIELDS = ("value", "stderr", "ci_low", "ci_high")


def estimators() -> list[Any]:
    """The seven estimators of the issue's table."""
    return [IPS(), SNIPS(), DM(), DR(), SNDR(), SwitchDR(threshold=50.0), DRos(shrinkage=50.0)]


@pytest.fixture
def table_scale(benchmark: Any) -> Scale:
    """Full size when the benchmark plugin is enabled, small otherwise, unless ``LLM_OPE_BENCH_SCALE`` says."""
    name = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if benchmark.disabled else "full")
    if name not in SCALES:
        raise pytest.UsageError(f"LLM_OPE_BENCH_SCALE must be one of {sorted(SCALES)}. Got {name!r}.")
    return SCALES[name]


def softmax_log(n: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """The feedback, a softmax target on the eligible arms and q̂ of an n-row synthetic log."""
    data = make_batch(0, 0, n)
    q = data["q_hat"]
    logits = np.where(data["eligible"], 5.0 * q[:, :, 0], -np.inf)
    target = np.exp(logits - logits.max(axis=1, keepdims=True))
    target /= target.sum(axis=1, keepdims=True)
    return feedback(data), target, q


def _table(n: int, method: str, inference: str, conn: Connection) -> dict[str, Any]:
    """Build the log, report ready, and on "go" estimate the table one way; time and memory of the estimates only."""
    fb, target, q = softmax_log(n)
    build_peak_mb = _peak_rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM: the peak from here on is the estimates'
            fh.write("5")
        reset = True
    except OSError:
        reset = False
    conn.send(("ready", _status_mb("VmRSS")))
    conn.recv()
    chosen = estimators()
    infer = Bootstrap(n_replicates=N_BOOT) if inference == "bootstrap" else Normal()
    load_before, t0 = os.getloadavg()[0], time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        if method == "all":
            out = evaluate_all(fb, target=target, q_hat=q, estimators=chosen, inference=infer)
        else:
            with threadpool_limits(limits=1 if method == "loop_blas1" else None, user_api="blas"):
                out = {e.name: e.estimate(fb, target=target, q_hat=q, inference=infer) for e in chosen}
    seconds = time.perf_counter() - t0
    return {"n": n, "seconds": seconds, "loadavg_1min": [load_before, os.getloadavg()[0]],
            "estimate_peak_rss_mb": _peak_rss_mb() if reset else float("nan"),
            "peak_rss_mb": max(build_peak_mb, _peak_rss_mb()), "blas_threads": _blas_threads(),
            "results": {name: {f: np.atleast_1d(getattr(est, f)).tolist() for f in FIELDS} for name, est in out.items()}}


def _main(conn: Connection, n: int, method: str, inference: str) -> None:
    try:
        conn.send(("ok", _table(n, method, inference, conn)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _receive(conn: Connection, proc: Any, want: str) -> Any:
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while not conn.poll(1.0):
        if not proc.is_alive() and not conn.poll(0):
            raise RuntimeError(f"benchmark worker died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark worker gave no answer in {WORKER_TIMEOUT_S:.0f} s")
    status, payload = conn.recv()
    if status == "error":
        raise RuntimeError(f"benchmark worker failed:\n{payload}")
    assert status == want, (status, want)
    return payload


def run_table(benchmark: Any, results: dict[str, Any], n: int, method: str, inference: str) -> dict[str, Any]:
    """One case in a fresh worker (start-up, imports and the log untimed); recorded, printed and returned."""
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_main, args=(child, n, method, inference))
    ready: dict[str, float] = {}

    def start() -> None:
        proc.start()
        child.close()
        ready["rss_mb"] = _receive(conn, proc, "ready")

    def go() -> dict[str, Any]:
        conn.send("go")
        return _receive(conn, proc, "ok")

    try:
        out: dict[str, Any] = benchmark.pedantic(go, setup=start, rounds=1, iterations=1)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
        conn.close()
    out["log_rss_mb"] = ready["rss_mb"]
    case = f"table[{inference}, {method}]"
    benchmark.extra_info.update({k: v for k, v in out.items() if k != "results"} | {"case": case, "goal_s": GOALS[inference]})
    results["cases"][case] = out | {"estimator_seconds": out["seconds"]}
    print(f"\n[bench] {case}: n={n:,} {out['seconds']:.2f} s (goal at 10⁶ rows ≤ {GOALS[inference]:.0f} s), peak RSS "
          f"{out['peak_rss_mb']:.0f} MB (building the log included; while estimating {out['estimate_peak_rss_mb']:.0f} MB, "
          f"log alone {out['log_rss_mb']:.0f} MB); default BLAS threads {out['blas_threads']}; "
          f"load average {out['loadavg_1min'][0]:.1f} -> {out['loadavg_1min'][1]:.1f}")
    return out


def _same_estimates(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for name, est in want.items():
        for field in FIELDS:
            np.testing.assert_allclose(got[name][field], est[field], rtol=1e-9, atol=1e-12, err_msg=f"{name}.{field}")


@pytest.mark.benchmark(group="estimator table, 7 estimators x 7 metrics")
@pytest.mark.parametrize("inference", ["normal", "bootstrap"])
@pytest.mark.parametrize("method", ["all", "loop", "loop_blas1"])
def test_table(benchmark: Any, bench_results: dict[str, Any], table_scale: Scale, method: str, inference: str) -> None:
    out = run_table(benchmark, bench_results, table_scale.n_base, method, inference)
    assert set(out["results"]) == {e.name for e in estimators()}
    for name, est in out["results"].items():
        assert all(np.isfinite(est[f]).all() for f in FIELDS), name
    cases = bench_results["cases"]
    if method == "all" and table_scale.name == "full":
        assert out["estimate_peak_rss_mb"] < MEMORY_GOAL_MB or np.isnan(out["estimate_peak_rss_mb"]), out["estimate_peak_rss_mb"]
    if method != "all" and (done := cases.get(f"table[{inference}, all]")) is not None:
        _same_estimates(done["results"], out["results"])
        for field, label in (("seconds", "time"), ("estimate_peak_rss_mb", "peak RSS while estimating")):
            value = out[field] / done[field]
            bench_results["ratios"][f"{inference} table: {method} / evaluate_all {label}"] = value
            benchmark.extra_info.setdefault("ratios", {})[f"{method} / evaluate_all {label}"] = value
            print(f"[bench] {inference} table: {method} / evaluate_all {label} = {value:.2f}")
