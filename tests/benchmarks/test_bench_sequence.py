"""The canary's confidence sequences against a plain fixed-n estimate of the same rows, as a ratio in one run.

"Plain" is what `ope run` computes for the same question: IPS of the policy and its paired difference
against the baseline on two metrics, with a normal interval, once over all rows. The confidence
sequences (`estimators.canary.CanaryCS`, importance-weighted and doubly robust terms) give the bounds at
*every* row, in batches of an hour's rows carried through the JSON state as `ope monitor` does (q̂ given:
predicting it is the outcome models' cost, not the sequence's). Nothing asserts a time.

    python -m pytest tests/benchmarks/test_bench_sequence.py --benchmark-enable -n 0 -s
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pytest

from estimators import IPS
from estimators.canary import CanaryCS
from estimators.feedback import BanditFeedback
from estimators.onesided import OneSidedState

pytestmark = pytest.mark.benchmark

SCALES = {"small": 20_000, "full": 1_000_000}
ARMS, SHARE, BATCH = 6, 0.05, 2_000


def _canary(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    pi0 = np.zeros((n, ARMS))
    pi0[:, 0] = 1.0
    pi1 = np.zeros((n, ARMS))
    pi1[np.arange(n), rng.integers(1, ARMS, n)] = 1.0
    mix = (1 - SHARE) * pi0 + SHARE * pi1
    arms = (rng.random(n)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1)
    r = np.column_stack([rng.random(n) * 0.01, rng.random(n) < 0.5]).astype(float)
    return arms, mix[np.arange(n), arms], pi0, pi1, r


def _sequence(arms: np.ndarray, p: np.ndarray, pi0: np.ndarray, pi1: np.ndarray, r: np.ndarray,
              q: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> OneSidedState:
    cs = CanaryCS(alpha=0.025, share=SHARE, metric_high=(0.01, 1.0), doubly_robust=q is not None)
    rows = np.arange(len(arms))
    state = cs.start()
    for start in range(0, len(arms), BATCH):
        s = slice(start, start + BATCH)
        state, _ = cs.update(OneSidedState.from_dict(json.loads(json.dumps(state.to_dict()))),
                             weight=pi1[rows[s], arms[s]] / p[s], baseline_weight=pi0[rows[s], arms[s]] / p[s],
                             outcomes=r[s], q_hat=None if q is None else (q[0][s], q[1][s], q[2][s]))
    return state


def _plain(arms: np.ndarray, p: np.ndarray, pi0: np.ndarray, pi1: np.ndarray, r: np.ndarray) -> Any:
    fb = BanditFeedback(actions=arms, rewards=r, propensities=p)
    return IPS().estimate(fb, target=pi1), IPS().estimate_difference(fb, target=pi1, baseline=pi0)


def test_sequence_against_plain(benchmark: Any, bench_results: dict[str, Any], request: pytest.FixtureRequest) -> None:
    full = request.config.getoption("benchmark_enable") and os.environ.get("LLM_OPE_BENCH_SCALE", "full") == "full"
    n = SCALES["full" if full else "small"]
    data = _canary(n)
    start = time.perf_counter()
    plain = _plain(*data)
    plain_s = time.perf_counter() - start
    state = benchmark.pedantic(_sequence, args=data, rounds=1, iterations=1)
    seq_s = benchmark.stats.stats.mean if benchmark.stats else plain_s
    assert state.t == n and np.isfinite(plain[1].value).all()
    bench_results["cases"]["plain IPS value + difference"] = {"n": n, "seconds": plain_s, "peak_rss_mb": 0.0}
    bench_results["cases"]["confidence sequence, hourly state"] = {"n": n, "seconds": seq_s, "peak_rss_mb": 0.0}
    bench_results["ratios"]["confidence sequence / plain fixed-n run"] = seq_s / plain_s
    q = np.random.default_rng(1).random((3, n, 2)) * [0.01, 1.0]
    start = time.perf_counter()
    dr_state = _sequence(*data, q=(q[0], q[1], q[2]))
    dr_s = time.perf_counter() - start
    assert dr_state.t == n
    bench_results["cases"]["doubly robust confidence sequence, hourly state"] = {"n": n, "seconds": dr_s, "peak_rss_mb": 0.0}
    bench_results["ratios"]["doubly robust sequence / plain fixed-n run"] = dr_s / plain_s
