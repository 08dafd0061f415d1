"""The cost of the off-policy distributions (CDF grid of TTFT, latency, cost and throughput) against a plain evaluation.

What is measured, in one run, on one simulated log (60,000 requests at full size, the bundled sample's
size; 5,000 in the default test run) with q̂ = the simulator's exact expectations and a residual spread
fitted on them: the run's per-batch evaluation (`ope.evaluation.batch.evaluate_batch`: four policies
× IPS, SNIPS, DM, DR, normal intervals, the per-period/model/task tables) with ``[evaluation]
distributions = false`` ("plain") and ``true`` (128-point grids, IPS, SNIPS and DR CDFs with their
second moments and the cross moments against the baseline), median of 3 each, one BLAS thread as the
streamed engines use. The ratio with / plain is printed in the summary. No assertion on time; the
two evaluations must give the same estimates.

    python -m pytest tests/benchmarks/test_bench_distributions.py --benchmark-enable -n 0 -q -s
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from estimators import SupportWarning
from ope.config import load_config
from ope.data.dataset import BanditDataset
from ope.data.facts import DataFacts
from ope.evaluation.batch import BatchContext, BatchRows, evaluate_batch
from ope.evaluation.distributions import DistributionSpec
from ope.evaluation.plan import Plan
from ope.models.spread import ResidualSpread
from ope.simulate import simulate
from policies import Cheapest, DirectOfficial, Mixture, PriceWeighted, Uniform

pytestmark = pytest.mark.benchmark
SLA = 10_000.0


def _setup(n: int) -> tuple[BatchContext, BatchContext, BatchRows]:
    sim = simulate(n, days=2, seed=0)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
    q = sim.world.expected_outcomes(SLA)
    cfg = load_config("configs/quickstart.toml")
    cfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, estimators=("IPS", "SNIPS", "DM", "DR")))
    plan = Plan.of(cfg)
    policies = {"direct_official": DirectOfficial(fallback="cheapest").fit(ds), "cheapest": Mixture(policy=Cheapest().fit(ds), epsilon=0.05),
                "price_weighted": PriceWeighted(), "uniform": Uniform()}
    spec = DistributionSpec.of(plan, DataFacts.of(ds), None, ds)
    assert spec is not None
    spec = dataclasses.replace(spec, estimators=("IPS", "SNIPS", "DR"), spread=ResidualSpread.fit(ds, q, np.ones(ds.n, dtype=bool)))
    plain = BatchContext(plan, ds.catalog, policies, None, None, True)
    return plain, dataclasses.replace(plain, distributions=spec), BatchRows(ds, ds.to_feedback(), q)


def _median_seconds(ctx: BatchContext, rows: BatchRows, repeats: int) -> tuple[float, Any]:
    times, into = [], None
    for _ in range(repeats):
        into = ctx.empty()
        t0 = time.perf_counter()
        evaluate_batch(ctx, rows, into)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), into


def test_distribution_cost(benchmark: Any, bench_results: dict[str, dict[str, Any]]) -> None:
    n = 5_000 if benchmark.disabled else 60_000
    plain, with_cdf, rows = _setup(n)
    repeats = 1 if benchmark.disabled else 3
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", SupportWarning)
        base_s, base = _median_seconds(plain, rows, repeats)
        cdf_s, full = _median_seconds(with_cdf, rows, repeats)
        benchmark.pedantic(evaluate_batch, args=(with_cdf, rows, with_cdf.empty()), rounds=1, iterations=1)
    assert base is not None and full is not None and full.cdfs is not None and full.cdfs.parts
    for key, part in base.parts.items():  # the distributions change no estimate
        assert np.array_equal(part.sums.first, full.parts[key].sums.first)
    bench_results["cases"]["evaluate_batch plain"] = {"n": n, "seconds": base_s, "peak_rss_mb": 0.0}
    bench_results["cases"]["evaluate_batch with CDFs"] = {"n": n, "seconds": cdf_s, "peak_rss_mb": 0.0}
    bench_results["ratios"]["evaluate_batch with CDFs / plain"] = cdf_s / base_s
    print(f"\nevaluate_batch at n = {n:,}: plain {base_s:.3f} s, with CDFs {cdf_s:.3f} s, ratio {cdf_s / base_s:.2f}")
