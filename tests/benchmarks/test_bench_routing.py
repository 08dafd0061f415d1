"""Speed and memory of the constrained router (issue "Routing policies", item 7; DESIGN §8).

What is measured, with K = 8 arms (8 providers) and M = 7 metrics of synthetic q̂:

* the routing LP solved with CLARABEL on every request (``ConstrainedRouter(max_rows=None)``:
  minimise cost under binding satisfaction and SLA-hit floors, exploration 0.02), at 10⁵ and 10⁶
  requests — ``fit`` as a whole: reachability checks, the solve, the rule's calibration and its
  check on the fitted requests;
* applying the deployable rule (``action_probabilities``, i.e. ``LagrangianRule.probabilities``)
  to 10⁶ new requests, with the rule fitted beforehand (untimed) on 2·10⁴ requests.

Each case runs in a fresh spawned process: the synthetic data are made before the timer starts,
and the process's peak resident memory (VmHWM) is recorded next to its wall time in
``benchmark.extra_info`` and printed. No test asserts a wall-clock time.

Sizes come from ``LLM_OPE_BENCH_SCALE`` as in ``test_bench_estimators``: ``full`` (10⁵ / 10⁶) is the
default with ``--benchmark-enable -n 0``, ``small`` (2·10³ / 10⁴) otherwise, so the default test run
checks every case quickly; ``medium`` is 10⁴ / 10⁵. Full sizes (about a minute, 2.5 GB)::

    cd /work/main && python -m pytest tests/benchmarks/test_bench_routing.py --benchmark-enable -n 0 -q -s
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest

from ope.data.schema import METRICS

pytestmark = pytest.mark.benchmark

N_ARMS = 8
SEED = 20_251_001
RULE_ROWS = 20_000
SCALES = {"small": (2_000, 10_000), "medium": (10_000, 100_000), "full": (100_000, 1_000_000)}


@pytest.fixture
def sizes(benchmark: Any) -> tuple[int, int]:
    """(the "10⁵" size, the "10⁶" size): full when the benchmark plugin is enabled, small otherwise."""
    name = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if benchmark.disabled else "full")
    if name not in SCALES:
        raise pytest.UsageError(f"LLM_OPE_BENCH_SCALE must be one of {sorted(SCALES)}. Got {name!r}.")
    return SCALES[name]


def synthetic(n: int, seed: int = SEED) -> tuple[Any, np.ndarray]:
    """A stand-in dataset (what the router reads of a `BanditDataset`) and q̂ (n, K, M) for n requests.

    Arm k has a price factor rising with k and an SLA hit rate and satisfaction that rise with
    price on average, with per-request noise; about 10 % of (request, arm) pairs are ineligible
    (arm 0 always eligible); sample weights are 1 or 2.
    """
    rng = np.random.default_rng([seed, n])
    size = rng.lognormal(0.0, 0.8, size=(n, 1))
    price = np.geomspace(0.2, 3.0, N_ARMS)[None, :]
    q = np.empty((n, N_ARMS, len(METRICS)))
    col = {m: j for j, m in enumerate(METRICS)}
    q[..., col["success"]] = 0.95 + 0.04 * rng.random((n, N_ARMS))
    q[..., col["cost_usd"]] = 1e-3 * size * price * (0.8 + 0.4 * rng.random((n, N_ARMS)))
    q[..., col["satisfaction"]] = np.clip(0.6 + 0.08 * np.log1p(price) + 0.1 * rng.standard_normal((n, N_ARMS)), 0, 1)
    q[..., col["sla_hit"]] = np.clip(0.3 + 0.25 * np.log1p(price) + 0.15 * rng.standard_normal((n, N_ARMS)), 0, 1)
    q[..., col["ttft_ms"]] = 1000.0 / price * (0.5 + rng.random((n, N_ARMS)))
    q[..., col["latency_ms"]] = q[..., col["ttft_ms"]] + 5000.0 * size / price
    q[..., col["throughput_tps"]] = 40.0 * price * (0.5 + rng.random((n, N_ARMS)))
    eligible = rng.random((n, N_ARMS)) < 0.9
    eligible[:, 0] = True
    dataset = SimpleNamespace(  # a `policies.context.RoutingContext` of its own: no log, no catalog
        n=n,
        requests=pl.DataFrame({"model": np.zeros(n, dtype=np.int64)}),
        eligible=eligible,
        sample_weight=np.where(rng.random(n) < 0.2, 2.0, 1.0),
        metrics=METRICS,
        arms=tuple(f"p{k}/m" for k in range(N_ARMS)),
        arm_attributes=pl.DataFrame({"provider": [f"p{k}" for k in range(N_ARMS)]}),
    )
    return dataset, q


def router() -> Any:
    """Cheapest routing under binding satisfaction and SLA floors (the cheapest arm alone misses both)."""
    from policies.constrained import ConstrainedRouter

    return ConstrainedRouter(objective="cost", min_satisfaction=0.72, min_sla_hit=0.6, exploration=0.02, max_rows=None)


# -- the workloads (run in a fresh process) --------------------------------------------------------------


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))


def _solve(n: int) -> dict[str, Any]:
    dataset, q = synthetic(n)
    policy = router()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        policy.fit(dataset, q)
    seconds = time.perf_counter() - t0
    pi = policy.action_probabilities(dataset, q)
    stats = policy.solve_stats_
    return {
        "seconds": seconds,
        "lp_seconds": stats["seconds"],
        "compile_seconds": stats["compile_seconds"],
        "solver_seconds": stats["solver_seconds"],
        "iterations": stats["iterations"],
        "fitted": policy.fitted_values_,
        "row_error": float(np.abs(pi.sum(axis=1) - 1).max()),
    }


def _apply(n: int) -> dict[str, Any]:
    fit_data, fit_q = synthetic(RULE_ROWS, seed=SEED + 1)
    policy = router()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        policy.fit(fit_data, fit_q)
    dataset, q = synthetic(n)
    t0 = time.perf_counter()
    pi = policy.action_probabilities(dataset, q)
    seconds = time.perf_counter() - t0
    v = dataset.sample_weight / dataset.sample_weight.sum()
    values = dict(zip(METRICS, map(float, np.einsum("i,ik,ikm->m", v, pi, q)), strict=True))
    return {
        "seconds": seconds,
        "fitted": values,
        "row_error": float(np.abs(pi.sum(axis=1) - 1).max()),
        "tie_sets": len(policy.rule_.tie_split),
    }


def _worker(workload: str, n: int) -> dict[str, Any]:
    out = {"solve": _solve, "apply": _apply}[workload](n)
    out["peak_rss_mb"] = _peak_rss_mb()
    out["loadavg_1min"] = os.getloadavg()[0]
    return out


@dataclass
class Case:
    name: str
    workload: str
    n: int


def run_case(benchmark: Any, case: Case) -> dict[str, Any]:
    """Run one workload in a fresh spawned process; record and print its time and peak memory."""
    with mp.get_context("spawn").Pool(1) as pool:
        out: dict[str, Any] = benchmark.pedantic(
            pool.apply, args=(_worker, (case.workload, case.n)), rounds=1, iterations=1
        )
    benchmark.extra_info.update({"case": case.name, "n": case.n, "arms": N_ARMS, **out})
    print(
        f"\n[bench] {case.name}: n={case.n:,} x {N_ARMS} arms: {out['seconds']:.2f} s"
        + (
            f" (LP {out['lp_seconds']:.2f} s: cvxpy compile {out['compile_seconds']:.2f} s, CLARABEL "
            f"{out['solver_seconds']:.2f} s, {out['iterations']:.0f} iterations)"
            if "lp_seconds" in out
            else ""
        )
        + f", peak RSS {out['peak_rss_mb']:.0f} MB, load average {out['loadavg_1min']:.1f}"
    )
    return out


# -- the benchmarks -----------------------------------------------------------------------------------


def test_synthetic_targets_bind() -> None:
    """The floors are reachable, and the cheapest arm alone misses them, so the LP has work to do."""
    dataset, q = synthetic(5_000)
    v = dataset.sample_weight / dataset.sample_weight.sum()
    cheapest = np.argmin(np.where(dataset.eligible, q[..., METRICS.index("cost_usd")], np.inf), axis=1)
    for metric, floor in (("satisfaction", 0.72), ("sla_hit", 0.6)):
        values = q[..., METRICS.index(metric)]
        assert v @ values[np.arange(dataset.n), cheapest] < floor
        assert v @ np.where(dataset.eligible, values, -np.inf).max(axis=1) > floor + 0.05


@pytest.mark.benchmark(group="routing: constrained LP solve (CLARABEL, all rows)")
@pytest.mark.parametrize("size", ["1e5", "1e6"])
def test_constrained_solve(benchmark: Any, sizes: tuple[int, int], size: str) -> None:
    n = sizes[0] if size == "1e5" else sizes[1]
    out = run_case(benchmark, Case(f"solve[{size}]", "solve", n))
    assert out["fitted"]["satisfaction"] >= 0.72 - 1e-3 and out["fitted"]["sla_hit"] >= 0.6 - 1e-3
    assert out["row_error"] < 1e-9


@pytest.mark.benchmark(group="routing: deployable rule on new requests")
def test_apply_rule(benchmark: Any, sizes: tuple[int, int]) -> None:
    out = run_case(benchmark, Case("apply_rule[1e6]", "apply", sizes[1]))
    assert out["row_error"] < 1e-9
    assert out["fitted"]["satisfaction"] > 0.70  # the rule generalises to fresh requests of the same kind
