"""Cross-fitted LightGBM outcome models: q̂ (n, K, M) for the DR-family estimators and the policies.

One model per outcome that is learned (probability of success, satisfaction, SLA hit, TTFT,
latency, output tokens and tokens/s on the log scale); cost is not learned but built from its
structure: the catalog price in force applied to the request's input tokens and the predicted
output tokens of that arm. Every row's q̂ comes from models that never saw it (K folds by row key,
or by time block).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.metrics import log_loss, mean_absolute_error, roc_auc_score

from ope.dataset import BanditDataset
from ope.features import PairFeatures, build_features
from ope.progress import progress

__all__ = ["PredictorConfig", "OutcomeModels", "fit_outcome_models", "assign_folds", "MODELS"]

FloatArray = npt.NDArray[np.float64]

#: learned model → (kind, rows it is trained on)
MODELS: dict[str, tuple[str, str]] = {
    "success": ("binary", "all"),
    "satisfaction": ("xentropy", "observed"),
    "sla_hit": ("binary", "all"),
    "log_ttft": ("log", "all"),
    "log_latency": ("log", "all"),
    "log_output_tokens": ("log", "ok"),
    "log_tps": ("log", "ok"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictorConfig:
    """Cross-fitting and LightGBM settings (the [predictors] section of a config).

    The propensity model is kept smoother (``propensity_leaves``, ``propensity_min_child_samples``):
    small estimated propensities inflate importance weights, and a flexible choice model
    overfits rarely chosen arms (measured: implied mean weight 1.19 vs 1.05 on 8k rows).
    ``threads`` defaults to 1: on a 2-core machine shared with anything else, LightGBM's OpenMP
    threads spin-wait and one thread was 20× faster than two under load (and ~1.5× slower idle).
    """

    folds: int = 5
    time_blocked: bool = False
    n_estimators: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_child_samples: int = 20
    history_hours: float = 6.0
    threads: int = 1
    seed: int = 0
    propensity_leaves: int = 7
    propensity_min_child_samples: int = 100

    def params(self, objective: str) -> dict[str, Any]:
        """LightGBM parameters for one objective."""
        return {
            "objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples, "feature_fraction": 0.9, "bagging_fraction": 0.9,
            "bagging_freq": 1, "seed": self.seed, "num_threads": self.threads, "verbose": -1, "deterministic": True,
        }


@dataclass(slots=True)
class OutcomeModels:
    """Out-of-fold q̂ and what produced it: boosters per model and fold, smearing factors, quality."""

    q_hat: FloatArray
    folds: npt.NDArray[np.int64]
    features: PairFeatures
    boosters: dict[str, list[lgb.Booster]]
    smearing: dict[str, list[float]]
    quality: dict[str, dict[str, float]]
    failed_cost: FloatArray
    config: PredictorConfig
    extra: dict[str, Any] = field(default_factory=dict)


def assign_folds(ds: BanditDataset, folds: int, *, time_blocked: bool = False) -> npt.NDArray[np.int64]:
    """Fold of each row: from the row key (split-invariant), or contiguous time blocks."""
    if folds < 2:
        raise ValueError(f"Cross-fitting needs at least 2 folds. Got {folds}.")
    if time_blocked:
        rank = np.argsort(np.argsort(ds.logs["ts"].to_numpy(), kind="stable"), kind="stable")
        return (rank * folds // ds.n).astype(np.int64)
    return (ds.keys % np.uint64(folds)).astype(np.int64)


def _labels(ds: BanditDataset) -> dict[str, tuple[FloatArray, npt.NDArray[np.bool_]]]:
    """Training label and usable-row mask of each model."""
    col = {m: ds.outcomes[:, j] for j, m in enumerate(ds.metrics)}
    ok = col["success"] == 1
    out_tokens = ds.logs["output_tokens"].to_numpy().astype(np.float64)
    sat = col["satisfaction"]
    return {
        "success": (col["success"], np.ones(ds.n, dtype=bool)),
        "satisfaction": (np.nan_to_num(sat), ~np.isnan(sat)),
        "sla_hit": (col["sla_hit"], np.ones(ds.n, dtype=bool)),
        "log_ttft": (np.log1p(col["ttft_ms"]), np.ones(ds.n, dtype=bool)),
        "log_latency": (np.log1p(col["latency_ms"]), np.ones(ds.n, dtype=bool)),
        "log_output_tokens": (np.log1p(out_tokens), ok),
        "log_tps": (np.log1p(col["throughput_tps"]), ok & (col["throughput_tps"] > 0)),
    }


def _train(x: FloatArray, y: FloatArray, w: FloatArray, kind: str, feats: PairFeatures, cfg: PredictorConfig) -> tuple[lgb.Booster, float]:
    objective = {"binary": "binary", "xentropy": "cross_entropy", "log": "regression"}[kind]
    data = lgb.Dataset(x, label=y, weight=w, categorical_feature=list(feats.categorical),
                       feature_name=list(feats.names), free_raw_data=True)
    booster = lgb.train(cfg.params(objective), data, num_boost_round=cfg.n_estimators)
    smear = 1.0
    if kind == "log":
        resid = y - booster.predict(x)
        smear = float(np.average(np.exp(resid), weights=w))  # Duan's smearing: E[exp(ε)]
    return booster, smear


def _quality(kind: str, y: FloatArray, pred: FloatArray, w: FloatArray) -> dict[str, float]:
    if kind == "binary":
        out = {"log_loss": float(log_loss(y, np.clip(pred, 1e-6, 1 - 1e-6), sample_weight=w))}
        if 0 < y.mean() < 1:
            out["auc"] = float(roc_auc_score(y, pred, sample_weight=w))
        return out
    if kind == "log":
        return {"mae": float(mean_absolute_error(np.expm1(y), pred, sample_weight=w)), "mae_log": float(mean_absolute_error(y, np.log1p(pred), sample_weight=w))}
    return {"mae": float(mean_absolute_error(y, pred, sample_weight=w))}


def _assemble(preds: dict[str, FloatArray], ds: BanditDataset, rows: npt.NDArray[np.int64], arms: npt.NDArray[np.int64],
              failed_cost: FloatArray) -> FloatArray:
    """Metric predictions (P, M) for pairs, in `METRICS` order; cost from prices and predicted output."""
    p_ok = np.clip(preds["success"], 0.0, 1.0)
    tokens_in = ds.logs["input_tokens"].to_numpy()[rows].astype(np.float64)
    cost_ok = (tokens_in * ds.price_in[rows, arms] + preds["log_output_tokens"] * ds.price_out[rows, arms]) / 1e6
    by_metric = {
        "cost_usd": p_ok * cost_ok + (1 - p_ok) * failed_cost[arms],
        "success": p_ok,
        "satisfaction": np.clip(preds["satisfaction"], 0.0, 1.0),
        "ttft_ms": preds["log_ttft"],
        "latency_ms": preds["log_latency"],
        "throughput_tps": p_ok * preds["log_tps"],
        "sla_hit": np.clip(preds["sla_hit"], 0.0, 1.0),
    }
    return np.column_stack([by_metric[m] for m in ds.metrics])


def _failed_cost(ds: BanditDataset) -> FloatArray:
    """Mean logged cost of failed requests per arm (usually 0: most providers do not bill failures)."""
    failed = ds.outcomes[:, ds.metrics.index("success")] == 0
    cost = ds.outcomes[:, ds.metrics.index("cost_usd")]
    k = ds.catalog.n_arms
    total = np.bincount(ds.actions[failed], weights=cost[failed], minlength=k)
    count = np.bincount(ds.actions[failed], minlength=k)
    return np.divide(total, count, out=np.zeros(k), where=count > 0)


def fit_outcome_models(ds: BanditDataset, cfg: PredictorConfig | None = None, *, show_progress: bool = False) -> OutcomeModels:
    """Cross-fit every outcome model and return out-of-fold q̂ (n, K, M) with held-out quality."""
    cfg = PredictorConfig() if cfg is None else cfg
    feats = build_features(ds, window_hours=cfg.history_hours)
    folds = assign_folds(ds, cfg.folds, time_blocked=cfg.time_blocked)
    labels = _labels(ds)
    failed_cost = _failed_cost(ds)
    q_hat = np.zeros((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    boosters: dict[str, list[lgb.Booster]] = {m: [] for m in MODELS}
    smearing: dict[str, list[float]] = {m: [] for m in MODELS}
    held: dict[str, list[tuple[FloatArray, FloatArray, FloatArray]]] = {m: [] for m in MODELS}
    logged = feats.pairs(np.arange(ds.n), ds.actions)
    with progress("fitting outcome models", total=cfg.folds * len(MODELS), enabled=show_progress) as bar:
        for f in range(cfg.folds):
            train, test = folds != f, np.flatnonzero(folds == f)
            rows, arms = np.nonzero(ds.eligible[test])
            rows = test[rows]
            x_pairs = feats.pairs(rows, arms)
            preds: dict[str, FloatArray] = {}
            for name, (kind, _) in MODELS.items():
                y, usable = labels[name]
                fit_rows = train & usable
                booster, smear = _train(logged[fit_rows], y[fit_rows], ds.sample_weight[fit_rows], kind, feats, cfg)
                boosters[name].append(booster)
                smearing[name].append(smear)
                raw = booster.predict(x_pairs)
                preds[name] = np.expm1(raw) * smear if kind == "log" else raw
                test_rows = test[usable[test]]
                own = booster.predict(logged[test_rows])
                held[name].append((y[test_rows], np.expm1(own) * smear if kind == "log" else own, ds.sample_weight[test_rows]))
                bar.update(1)
            q_hat[rows, arms] = _assemble(preds, ds, rows, arms, failed_cost)
    quality = {name: _quality(MODELS[name][0], *(np.concatenate(p) for p in zip(*held[name], strict=True))) for name in MODELS}
    return OutcomeModels(q_hat, folds, feats, boosters, smearing, quality, failed_cost, cfg)
