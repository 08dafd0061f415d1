"""Speed of the LightGBM outcome models (issue "Predictors", item 9).

Measured on a simulated log (58 arms, ~5 eligible per request): cross-fitting all seven outcome
models with 2 folds — every model is trained twice on half the rows, the cost of training it once
on all of them — then predicting q̂ with all seven models for every eligible (request, arm) pair
and for 8 arms of every request (its eligible arms, then others up to 8, as if every request had
8 candidates). Targets on 2 cores: training on 10⁶ rows under 3 minutes, predicting 10⁶ requests
× 8 arms under 60 s. The current settings are compared with the former ones (100 trees of 31
leaves, learning rate 0.1) on a fifth of the rows: prediction speed as a ratio in the same run,
and each setting's held-out quality. Nothing asserts a wall-clock time; the numbers go to
``benchmark.extra_info`` and the benchmark summary.

Sizes come from ``LLM_OPE_BENCH_SCALE`` (``full``: 10⁶ rows, the default with
``--benchmark-enable -n 0``; ``small``: 5,000 rows, the default otherwise; ``medium``: 10⁵)::

    python -m pytest tests/benchmarks/test_bench_predictors.py --benchmark-enable -n 0 -s

Full size needs several GB of memory for q̂ and the pair features.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ope.data.dataset import BanditDataset
from ope.models.predictors import MODELS, OutcomeModels, PredictorConfig, fit_outcome_models
from ope.simulate import simulate

pytestmark = pytest.mark.benchmark

SCALES = {"small": 5_000, "medium": 100_000, "full": 1_000_000}
ARMS_PER_REQUEST = 8
#: the outcome models' settings before prediction speed set them
FORMER = {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31}


def predict_seconds(models: OutcomeModels, rows: npt.NDArray[np.int64], arms: npt.NDArray[np.int64]) -> tuple[float, float]:
    """Seconds to build the pair features and to predict them with the first fold's seven models."""
    t = time.perf_counter()
    x = models.features.pairs(rows, arms)
    features = time.perf_counter() - t
    t = time.perf_counter()
    for name in MODELS:
        models.boosters[name][0].predict(x, raw_score=True, num_threads=models.config.predict_threads)
    return features, time.perf_counter() - t


def eight_arms(ds: BanditDataset) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pairs of every request with 8 arms: its eligible ones first, then others in catalog order."""
    arms = np.argsort(~ds.eligible, axis=1, kind="stable")[:, :ARMS_PER_REQUEST]
    return np.repeat(np.arange(ds.n), ARMS_PER_REQUEST), arms.ravel()


@pytest.mark.benchmark(group="predictors")
def test_fit_and_predict_outcome_models(benchmark: Any, bench_results: dict[str, Any]) -> None:
    scale = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if benchmark.disabled else "full")
    if scale not in SCALES:
        raise pytest.UsageError(f"LLM_OPE_BENCH_SCALE must be one of {sorted(SCALES)}. Got {scale!r}.")
    n = SCALES[scale]
    sim = simulate(n, days=7, seed=3)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000)
    del sim
    t = time.perf_counter()
    models = benchmark.pedantic(fit_outcome_models, args=(ds, PredictorConfig(folds=2)), rounds=1, iterations=1)
    fit_seconds = time.perf_counter() - t
    assert np.isfinite(models.q_hat[ds.eligible]).all()
    info: dict[str, Any] = {"rows": n, "fit_seconds_2_folds": fit_seconds}
    for case, (rows, arms) in {"eligible": np.nonzero(ds.eligible), "8_arms": eight_arms(ds)}.items():
        features, predict = predict_seconds(models, rows, arms)
        info |= {f"{case}_pairs": int(rows.size), f"{case}_features_seconds": features,
                 f"{case}_predict_seconds_7_models": predict, f"{case}_pairs_per_second": rows.size / (features + predict)}
    del models
    # former vs current settings, same rows and pairs: a fifth of the log, its 8 arms per request
    part = ds.subset(np.arange(ds.n) % 5 == 0)
    rows, arms = eight_arms(part)
    fitted = {"current": fit_outcome_models(part, PredictorConfig(folds=2)),
              "former": fit_outcome_models(part, PredictorConfig(folds=2, **FORMER))}
    seconds: dict[str, list[float]] = {name: [] for name in fitted}
    for _ in range(3):  # interleaved, fastest of three: the machine's load changes between calls
        for name, m in fitted.items():
            seconds[name].append(predict_seconds(m, rows, arms)[1])
    for name, m in fitted.items():
        info[f"{name}_predict_seconds_subset"] = min(seconds[name])
        info[f"{name}_quality"] = m.quality
    info["speedup_current_vs_former"] = info["former_predict_seconds_subset"] / info["current_predict_seconds_subset"]
    benchmark.extra_info.update(info)
    bench_results["ratios"]["predict q̂: former / current model settings"] = info["speedup_current_vs_former"]
    print(f"\n[bench] predictors n={n:,}: cross-fit (2 folds, 7 models) {fit_seconds:.1f} s")
    for case in ("eligible", "8_arms"):
        print(f"[bench] {case}: {info[f'{case}_pairs']:,} pairs, features {info[f'{case}_features_seconds']:.1f} s, "
              f"7 models {info[f'{case}_predict_seconds_7_models']:.1f} s, {info[f'{case}_pairs_per_second']:,.0f} pairs/s")
    print(f"[bench] {rows.size:,} pairs x 7 models: former settings {info['former_predict_seconds_subset']:.2f} s, "
          f"current {info['current_predict_seconds_subset']:.2f} s, speed-up {info['speedup_current_vs_former']:.2f}x")
    for model in MODELS:
        former, current = ({k: round(v, 4) for k, v in info[f"{s}_quality"][model].items()} for s in ("former", "current"))
        print(f"[bench] held-out quality {model}: former {former}, current {current}")


@pytest.mark.benchmark(group="predictors")
def test_compiled_trees_against_lightgbm(benchmark: Any, bench_results: dict[str, Any]) -> None:
    """q̂ of every eligible pair of 10⁶ requests with the seven models, LightGBM against lleaves (issue 19 item 3):
    interleaved, fastest of three; compiling (once, then cached by the booster's hash) timed apart."""
    pytest.importorskip("lleaves", reason='lleaves is not installed: pip install "llm-ope[fast]" (dev installs it)')
    from ope.models.compiled import raw_scorer

    scale = os.environ.get("LLM_OPE_BENCH_SCALE") or ("small" if benchmark.disabled else "full")
    n = SCALES[scale]
    sim = simulate(n, days=7, seed=3)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=10_000)
    del sim
    models = fit_outcome_models(ds.subset(np.arange(ds.n) < min(ds.n, 100_000)), PredictorConfig(folds=2))
    rows, arms = np.nonzero(ds.eligible)
    x = models.features.pairs(rows, arms) if ds.n <= 100_000 else None
    if x is None:  # the models' own feature blocks cover their training rows only: build the pairs of every row
        from ope.models.features import build_features

        x = build_features(ds, window_hours=models.config.history_hours).pairs(rows, arms)
    threads = models.config.predict_threads
    boosters = [models.boosters[name][0] for name in MODELS]
    t = time.perf_counter()
    scorers = {"lightgbm": [raw_scorer(b, "off", threads) for b in boosters], "lleaves": [raw_scorer(b, "lleaves", threads) for b in boosters]}
    compile_seconds = time.perf_counter() - t
    seconds: dict[str, list[float]] = {name: [] for name in scorers}
    scores: dict[str, list[np.ndarray]] = {}
    for _ in range(3):
        for name, fns in scorers.items():
            t = time.perf_counter()
            scores[name] = [fn(x) for fn in fns]
            seconds[name].append(time.perf_counter() - t)
    for a, b in zip(scores["lightgbm"], scores["lleaves"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    info = {"requests": n, "pairs": int(rows.size), "compile_seconds_7_models": compile_seconds,
            **{f"{name}_seconds_7_models": min(s) for name, s in seconds.items()}}
    info["speedup"] = info["lightgbm_seconds_7_models"] / info["lleaves_seconds_7_models"]
    benchmark.extra_info.update(info)
    bench_results["ratios"]["predict q̂: LightGBM / lleaves (compiled trees)"] = info["speedup"]
    print(f"\n[bench] {n:,} requests, {rows.size:,} eligible pairs x 7 models: LightGBM {info['lightgbm_seconds_7_models']:.2f} s, "
          f"lleaves {info['lleaves_seconds_7_models']:.2f} s ({info['speedup']:.1f}x); compiling 7 models {compile_seconds:.1f} s")
