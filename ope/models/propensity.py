"""Estimated propensities for logs that carry none (the common case for gateway logs).

A conditional logit over each request's eligible set, boosted: LightGBM scores every eligible
(request, arm) pair and π̂(a | x) is the softmax of the scores within the request, trained on the
multinomial likelihood of the arm that served it (a custom grouped-softmax objective, so the
choice set may differ from request to request). Cross-fitted like the outcome models.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from ope.data.dataset import BanditDataset
from ope.models.compiled import raw_scorer
from ope.models.features import PairFeatures, build_features
from ope.models.predictors import PredictorConfig, assign_folds
from ope.progress import progress

__all__ = ["FLOOR", "PropensityModel", "fit_propensities", "predict_propensities"]

FloatArray = npt.NDArray[np.float64]
#: estimated probabilities are kept at or above this floor so no weight explodes
FLOOR = 1e-3


@dataclass(slots=True)
class PropensityModel:
    """Out-of-fold estimated logging probabilities (n, K) and their diagnostics."""

    probabilities: FloatArray
    propensities: FloatArray
    boosters: list[lgb.Booster]
    features: PairFeatures
    diagnostics: dict[str, float]


def _group_softmax(scores: FloatArray, starts: npt.NDArray[np.int64]) -> FloatArray:
    """Softmax of scores within contiguous groups beginning at ``starts``."""
    sizes = np.diff(np.append(starts, scores.shape[0]))
    top = np.repeat(np.maximum.reduceat(scores, starts), sizes)
    e = np.exp(scores - top)
    return e / np.repeat(np.add.reduceat(e, starts), sizes)


def _softmax_objective(starts: npt.NDArray[np.int64], chosen: FloatArray, weight: FloatArray):  # type: ignore[no-untyped-def]
    """Gradient and Hessian of the weighted multinomial log-likelihood of the chosen arm per group."""

    def objective(scores: FloatArray, _data: lgb.Dataset) -> tuple[FloatArray, FloatArray]:
        p = _group_softmax(scores, starts)
        return weight * (p - chosen), np.maximum(weight * p * (1 - p), 1e-12)

    return objective


def _normalise(probs_pairs: FloatArray, rows: npt.NDArray[np.int64], arms: npt.NDArray[np.int64], n: int, k: int) -> FloatArray:
    probs = np.zeros((n, k))
    probs[rows, arms] = probs_pairs
    probs = np.where(probs > 0, np.maximum(probs, FLOOR), 0.0)
    return probs / probs.sum(axis=1, keepdims=True)


def _calibration_error(probs: FloatArray, chosen: FloatArray, bins: int = 10) -> float:
    """Expected calibration error of pair probabilities vs the chosen indicator."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probs, edges) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, weights=probs, minlength=bins) - np.bincount(idx, weights=chosen, minlength=bins))
    return float(gap.sum() / max(count.sum(), 1))


def fit_propensities(ds: BanditDataset, cfg: PredictorConfig | None = None, *, show_progress: bool = False,
                     features: PairFeatures | None = None) -> PropensityModel:
    """Cross-fitted estimate of the logging policy π_0(a | x) over each request's eligible arms.

    ``features`` gives the feature blocks ready-made (a streamed log's training sample).
    """
    cfg = PredictorConfig() if cfg is None else cfg
    feats = build_features(ds, window_hours=cfg.history_hours) if features is None else features
    folds = assign_folds(ds, cfg.folds, time_blocked=cfg.time_blocked)
    n, k = ds.eligible.shape
    rows, arms = np.nonzero(ds.eligible)
    chosen = (ds.actions[rows] == arms).astype(np.float64)
    x = feats.pairs(rows, arms)
    scores = np.zeros(rows.shape[0])
    boosters = []
    with progress("fitting propensity model", total=cfg.folds, enabled=show_progress) as bar:
        for f in range(cfg.folds):
            train = folds[rows] != f
            train_rows = rows[train]
            starts = np.flatnonzero(np.r_[True, train_rows[1:] != train_rows[:-1]])
            params = {**cfg.params("binary"), "num_leaves": cfg.propensity_leaves, "learning_rate": cfg.propensity_learning_rate,
                      "min_child_samples": cfg.propensity_min_child_samples,
                      "objective": _softmax_objective(starts, chosen[train], ds.sample_weight[train_rows])}
            data = lgb.Dataset(x[train], categorical_feature=list(feats.categorical), feature_name=list(feats.names))
            booster = lgb.train(params, data, num_boost_round=cfg.propensity_n_estimators)
            boosters.append(booster)
            test_rows = rows[~train]
            test_starts = np.flatnonzero(np.r_[True, test_rows[1:] != test_rows[:-1]])
            raw = booster.predict(x[~train], raw_score=True, num_threads=cfg.predict_threads)
            scores[~train] = _group_softmax(raw, test_starts)
            bar.update(1)
    probs = _normalise(scores, rows, arms, n, k)
    propensities = probs[np.arange(n), ds.actions]
    n_eligible = ds.eligible.sum(axis=1)
    diagnostics = {
        "calibration_error": _calibration_error(probs[rows, arms], chosen),
        "uniform_mean_weight": float(np.average(1.0 / (n_eligible * propensities), weights=ds.sample_weight)),
        "min_propensity": float(propensities.min()),
        "p01_propensity": float(np.quantile(propensities, 0.01)),
        "floor": FLOOR,
    }
    return PropensityModel(probs, propensities, boosters, feats, diagnostics)


def predict_propensities(model: PropensityModel, ds: BanditDataset, feats: PairFeatures, cfg: PredictorConfig) -> FloatArray:
    """π̂_0 of the logged arm of new rows, each scored by the booster of its own fold (key mod folds), as in the fit.

    For the rows of a streamed log whose training sample the model was cross-fitted on, no row is
    scored by a booster that saw it, and each value equals the in-memory one when the sample is the log.
    """
    folds = assign_folds(ds, cfg.folds)
    rows, arms = np.nonzero(ds.eligible)
    scores = np.zeros(rows.shape[0])
    x = feats.pairs(rows, arms)
    for f, booster in enumerate(model.boosters):
        sel = folds[rows] == f
        if not sel.any():
            continue
        chosen_rows = rows[sel]
        starts = np.flatnonzero(np.r_[True, chosen_rows[1:] != chosen_rows[:-1]])
        scores[sel] = _group_softmax(raw_scorer(booster, cfg.compiled, cfg.predict_threads)(x[sel]), starts)
    probs = _normalise(scores, rows, arms, ds.n, ds.catalog.n_arms)
    return probs[np.arange(ds.n), ds.actions]
