"""Speed of the LightGBM outcome models (issue "Predictors", item 9).

Measured on a simulated log (58 arms, ~5 eligible per request): cross-fitting all seven outcome
models with 2 folds — every model is trained twice on half the rows, the cost of training it once
on all of them — and predicting q̂ for every eligible (request, arm) pair with all seven models.
Targets on 2 cores: training on 10⁶ rows under 3 minutes, predicting 10⁶ requests × their arms
under 60 s. Nothing asserts a wall-clock time; the numbers go to ``benchmark.extra_info``.

Full size (10⁶ rows; several GB of memory for q̂ and the pair features)::

    python -m pytest tests/benchmarks/test_bench_predictors.py --benchmark-enable -s

The default test run (benchmarks disabled) runs the same code once on 5,000 rows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from ope.dataset import BanditDataset
from ope.predictors import MODELS, PredictorConfig, fit_outcome_models
from ope.simulate import simulate

pytestmark = pytest.mark.benchmark


@pytest.mark.benchmark(group="predictors")
def test_fit_and_predict_outcome_models(benchmark: Any) -> None:
    n = 5_000 if benchmark.disabled else 1_000_000
    sim = simulate(n, days=7, seed=3)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000)
    del sim
    t = time.perf_counter()
    models = benchmark.pedantic(fit_outcome_models, args=(ds, PredictorConfig(folds=2)), rounds=1, iterations=1)
    fit_seconds = time.perf_counter() - t
    rows, arms = np.nonzero(ds.eligible)
    x = models.features.pairs(rows, arms)
    t = time.perf_counter()
    for name in MODELS:
        models.boosters[name][0].predict(x, raw_score=True, num_threads=PredictorConfig().predict_threads)
    predict_seconds = time.perf_counter() - t
    benchmark.extra_info.update({
        "rows": n, "pairs": int(rows.size), "fit_seconds_2_folds": fit_seconds,
        "predict_seconds_all_pairs_7_models": predict_seconds,
    })
    print(f"\n[bench] predictors n={n:,}: cross-fit (2 folds, 7 models) {fit_seconds:.1f} s; "
          f"predict {rows.size:,} pairs x 7 models {predict_seconds:.1f} s")
    assert np.isfinite(models.q_hat[ds.eligible]).all()
