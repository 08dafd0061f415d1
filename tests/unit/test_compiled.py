"""Compiled tree inference (the optional ``fast`` extra): lleaves gives LightGBM's raw scores bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from ope.data.dataset import BanditDataset
from ope.models import compiled
from ope.models.features import build_features
from ope.models.predictors import PredictorConfig, fit_outcome_models, predict_q_hat

HAS_LLEAVES = importlib.util.find_spec("lleaves") is not None
needs_lleaves = pytest.mark.skipif(not HAS_LLEAVES, reason='lleaves is not installed: pip install "llm-ope[fast]" (CI installs it with dev)')


def _booster(rng: np.random.Generator, objective: str) -> tuple[lgb.Booster, np.ndarray]:
    x = rng.random((3_000, 6))
    x[:, 5] = rng.integers(0, 7, 3_000)  # a categorical column, as the arm and provider codes are
    y = (x[:, 0] + 0.3 * x[:, 1] > 0.7).astype(float) if objective == "binary" else np.log1p(50 * x[:, 0] + x[:, 2])
    data = lgb.Dataset(x, label=y, categorical_feature=[5])
    booster = lgb.train({"objective": objective, "num_leaves": 15, "verbose": -1, "seed": 0}, data, num_boost_round=60)
    new = rng.random((5_000, 6))
    new[:, 5] = rng.integers(0, 8, 5_000)  # one category the training rows never had
    return booster, new


@needs_lleaves
@pytest.mark.parametrize("objective", ["binary", "regression"])
def test_compiled_scores_equal_lightgbm_bit_for_bit(objective: str, rng: np.random.Generator, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    booster, x = _booster(rng, objective)
    got = compiled.raw_scorer(booster, "lleaves", 1)(x)
    np.testing.assert_array_equal(got, booster.predict(x, raw_score=True))
    assert len(list((tmp_path / "llm-ope" / "lleaves").glob("*.so"))) == 1  # cached by the booster's hash


@needs_lleaves
def test_q_hat_of_a_streamed_batch_is_the_same_compiled(simulated: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = BanditDataset.load(*simulated, sla_latency_ms=10_000)
    models = fit_outcome_models(ds, PredictorConfig(folds=2, n_estimators=10, num_leaves=7))
    feats = build_features(ds, window_hours=6.0)
    plain = predict_q_hat(models, ds, feats)
    models.config = PredictorConfig(folds=2, n_estimators=10, num_leaves=7, compiled="lleaves")
    np.testing.assert_allclose(predict_q_hat(models, ds, feats), plain, rtol=1e-12, atol=0)


def test_without_lleaves_lightgbm_predicts_and_says_so_once(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    booster, x = _booster(rng, "binary")
    monkeypatch.setitem(__import__("sys").modules, "lleaves", None)  # as if not installed
    monkeypatch.setattr(compiled, "_SAID", set())
    with pytest.warns(RuntimeWarning, match="lleaves is not installed"):
        first = compiled.raw_scorer(booster, "lleaves", 1)(x)
    np.testing.assert_array_equal(first, booster.predict(x, raw_score=True))


def test_an_unknown_compiler_is_refused() -> None:
    with pytest.raises(ValueError, match="compiled must be one of off, lleaves"):
        PredictorConfig(compiled="treelite")
