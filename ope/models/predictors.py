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

from ope.data.dataset import BanditDataset
from ope.models.compiled import COMPILERS, raw_scorer
from ope.models.corrections import apply_correction, mean_correction
from ope.models.features import PairFeatures, build_features
from ope.progress import progress

__all__ = ["MODELS", "OutcomeModels", "PredictorConfig", "assign_folds", "fit_outcome_models", "fold_q_hat", "mean_q_hat", "predict_q_hat"]

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
    overfits rarely chosen arms (measured on 5k–8k-row simulated logs: target weights 3 % too large
    and IPS coverage of success 0.23 with the outcome models' settings; 1.4 % and 1.00 with these).
    ``predict_threads`` (default 2) is used for prediction, which parallelises cleanly (measured 2.0×
    on 2 cores). ``threads`` (training) defaults to 1: on a 2-core machine shared with anything else, LightGBM's OpenMP
    threads spin-wait and one thread was 20× faster than two under load (and ~1.5× slower idle).

    The outcome models' size (60 trees of 15 leaves, learning rate 0.15) is set by prediction time,
    which is almost all tree traversal (LightGBM's per-row overhead is ~0.1 µs of ~4 µs; float32
    input, Fortran order and chunking gave nothing consistent, numeric arm codes ~15 %).
    Against the former 100 trees of 31 leaves at learning rate 0.1, measured on a simulated log of
    10⁶ rows (trained on half, scored on the other half): prediction 2.5–2.6× faster, training 2.4×,
    held-out quality unchanged (log-loss, AUC and log-scale MAE within ±0.2 % for every model), and
    on 12 simulator-truth seeds DR's RMSE about the same and DM's lower (less overfitting at 5k rows).
    ``compiled = "lleaves"`` scores new rows (a streamed run's batches) with compiled trees (`ope.models.compiled`).
    """

    folds: int = 5
    time_blocked: bool = False
    n_estimators: int = 60
    learning_rate: float = 0.15
    num_leaves: int = 15
    min_child_samples: int = 20
    history_hours: float = 6.0
    threads: int = 1
    predict_threads: int = 2
    compiled: str = "off"
    seed: int = 0
    propensity_leaves: int = 3
    propensity_min_child_samples: int = 300
    propensity_learning_rate: float = 0.05
    propensity_n_estimators: int = 100

    def __post_init__(self) -> None:
        if self.compiled not in COMPILERS:
            raise ValueError(f"[predictors] compiled must be one of {', '.join(COMPILERS)}. Got {self.compiled!r}.")

    def params(self, objective: str) -> dict[str, Any]:
        """LightGBM parameters for one objective."""
        return {
            "objective": objective, "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples, "feature_fraction": 0.9, "bagging_fraction": 0.9,
            "bagging_freq": 1, "seed": self.seed, "num_threads": self.threads, "verbose": -1, "deterministic": True,
        }


@dataclass(slots=True)
class OutcomeModels:
    """Out-of-fold q̂ and what produced it: boosters per model and fold, per-fold, per-arm mean corrections
    (a smearing factor for log-scale models, a logit shift for probability models), quality."""

    q_hat: FloatArray
    folds: npt.NDArray[np.int64]
    features: PairFeatures
    boosters: dict[str, list[lgb.Booster]]
    corrections: dict[str, list[list[float]]]
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


def _train(x: FloatArray, y: FloatArray, w: FloatArray, kind: str, feats: PairFeatures, cfg: PredictorConfig) -> lgb.Booster:
    objective = {"binary": "binary", "xentropy": "cross_entropy", "log": "regression"}[kind]
    data = lgb.Dataset(x, label=y, weight=w, categorical_feature=list(feats.categorical),
                       feature_name=list(feats.names), free_raw_data=True)
    return lgb.train(cfg.params(objective), data, num_boost_round=cfg.n_estimators)


def _constant(kind: str, y: FloatArray, rows: npt.NDArray[np.bool_], w: FloatArray) -> float:
    """The stand-in prediction of a model too few training rows can fit: their mean label, on the outcome's scale."""
    if not rows.any():
        return 0.0
    return float(np.average(np.expm1(y[rows]) if kind == "log" else y[rows], weights=w[rows]))


def _quality(kind: str, y: FloatArray, pred: FloatArray, w: FloatArray) -> dict[str, float]:
    if kind == "binary":
        out = {"log_loss": float(log_loss(y, np.clip(pred, 1e-6, 1 - 1e-6), sample_weight=w, labels=[0, 1]))}
        if 0 < y.mean() < 1:
            out["auc"] = float(roc_auc_score(y, pred, sample_weight=w))
        if y.mean() > 0:    # calibration in the large: mean predicted probability over the observed rate
            out["mean_ratio"] = float(np.average(pred, weights=w) / np.average(y, weights=w))
        return out
    observed = float(np.average(y, weights=w))
    out = {"mae": float(mean_absolute_error(y, pred, sample_weight=w))}
    if observed != 0:    # an outcome that is always 0 (no feedback at all) has no ratio
        out["mean_ratio"] = float(np.average(pred, weights=w) / observed)
    if kind == "log":
        out["mae_log"] = float(mean_absolute_error(np.log1p(y), np.log1p(np.maximum(pred, 0.0)), sample_weight=w))
    return out


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


def _failed_cost(ds: BanditDataset, rows: npt.NDArray[np.bool_]) -> FloatArray:
    """Mean logged cost of failed requests per arm over ``rows`` (usually 0: most providers do not bill failures)."""
    failed = (ds.outcomes[:, ds.metrics.index("success")] == 0) & rows
    cost = ds.outcomes[:, ds.metrics.index("cost_usd")]
    k = ds.catalog.n_arms
    total = np.bincount(ds.actions[failed], weights=cost[failed], minlength=k)
    count = np.bincount(ds.actions[failed], minlength=k)
    return np.divide(total, count, out=np.zeros(k), where=count > 0)


def fit_outcome_models(ds: BanditDataset, cfg: PredictorConfig | None = None, *, train: npt.NDArray[np.bool_] | None = None,
                       features: PairFeatures | None = None, show_progress: bool = False) -> OutcomeModels:
    """Cross-fit every outcome model and return out-of-fold q̂ (n, K, M) with held-out quality.

    Two passes: fit every model on each fold's complement and score the fold; then correct each
    fold's predictions with a mean correction (`ope.models.corrections`) estimated only from the other folds'
    out-of-fold predictions, so no row's q̂ uses its own label. With ``train`` (a row mask), the
    models learn from those rows only and every other row gets the mean of the fold models'
    predictions: a hold-out window scored by models that never saw it (`ope tune`). Features are
    still built on all rows, since the history features only look at earlier rows; ``features``
    gives them ready-made (a streamed sample whose history comes from the whole log). A model
    whose label a training fold does not observe (satisfaction in a log without feedback) is not fitted:
    it predicts the mean observed label (0 if none) and is listed in ``extra["not_fitted"]``; so
    does one with fewer training rows in some fold than a leaf needs (``min_child_samples``).
    """
    cfg = PredictorConfig() if cfg is None else cfg
    feats = build_features(ds, window_hours=cfg.history_hours) if features is None else features
    if train is None:
        folds = assign_folds(ds, cfg.folds, time_blocked=cfg.time_blocked)
    else:
        folds = np.full(ds.n, -1, dtype=np.int64)
        folds[train] = assign_folds(ds.subset(train), cfg.folds, time_blocked=cfg.time_blocked)
    labels = _labels(ds)
    least = max(2, cfg.min_child_samples)  # fewer rows than one leaf needs: LightGBM could only learn the mean
    fitted = {name: all(((folds != f) & (folds >= 0) & usable).sum() >= least for f in range(cfg.folds))
              for name, (_, usable) in labels.items()}
    constant = {name: _constant(MODELS[name][0], y, usable & (folds >= 0), ds.sample_weight)
                for name, (y, usable) in labels.items() if not fitted[name]}
    fits = _fit_folds(ds, feats, folds, labels, fitted, cfg, show_progress)
    failed_cost = _failed_cost(ds, folds >= 0)
    q_hat, corrections, held = _corrected(ds, fits, folds, labels, constant, failed_cost, cfg.folds)
    quality = {name: _quality(MODELS[name][0], *(np.concatenate(p) for p in zip(*held[name], strict=True)))
               for name in MODELS if fitted[name]}
    extra = {"not_fitted": sorted(constant), "constants": constant} if constant else {}
    return OutcomeModels(q_hat, folds, feats, fits.boosters, corrections, quality, failed_cost, cfg, extra)


Labels = dict[str, tuple[FloatArray, npt.NDArray[np.bool_]]]


@dataclass
class _FoldFits:
    """Pass 1 of the cross-fit: every fold's boosters, their raw scores on the fold's eligible pairs (and the
    hold-out pairs), and the raw out-of-fold scores on each row's logged arm."""

    boosters: dict[str, list[lgb.Booster]]
    pair_index: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]
    pair_raw: list[dict[str, FloatArray]]
    oof: dict[str, FloatArray]
    hold: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def _fit_folds(ds: BanditDataset, feats: PairFeatures, folds: npt.NDArray[np.int64], labels: Labels, fitted: dict[str, bool],
               cfg: PredictorConfig, show_progress: bool) -> _FoldFits:
    """Fit every model on each fold's complement and score the fold's pairs, its logged arms and the hold-out pairs."""
    hold_rows, hold_arms = np.nonzero(ds.eligible & (folds < 0)[:, None])
    x_hold = feats.pairs(hold_rows, hold_arms) if hold_rows.size else None
    logged = feats.pairs(np.arange(ds.n), ds.actions)
    fits = _FoldFits({m: [] for m in MODELS}, [], [], {m: np.full(ds.n, np.nan) for m in MODELS}, (hold_rows, hold_arms))
    with progress("fitting outcome models", total=cfg.folds * len(MODELS), enabled=show_progress) as bar:
        for f in range(cfg.folds):
            fit_rows, test = (folds != f) & (folds >= 0), np.flatnonzero(folds == f)
            rows, arms = np.nonzero(ds.eligible[test])
            rows = test[rows]
            x_pairs = feats.pairs(rows, arms)
            fits.pair_index.append((rows, arms))
            fits.pair_raw.append({})
            for name, (kind, _) in MODELS.items():
                bar.update(1)
                if not fitted[name]:
                    continue
                y, usable = labels[name]
                use = fit_rows & usable
                booster = _train(logged[use], y[use], ds.sample_weight[use], kind, feats, cfg)
                fits.boosters[name].append(booster)
                fits.pair_raw[f][name] = booster.predict(x_pairs, raw_score=True, num_threads=cfg.predict_threads)
                fits.oof[name][test] = booster.predict(logged[test], raw_score=True, num_threads=cfg.predict_threads)
                if x_hold is not None:
                    fits.pair_raw[f][f"hold:{name}"] = booster.predict(x_hold, raw_score=True, num_threads=cfg.predict_threads)
    return fits


def _corrected(ds: BanditDataset, fits: _FoldFits, folds: npt.NDArray[np.int64], labels: Labels, constant: dict[str, float],
               failed_cost: FloatArray, n_folds: int) -> tuple[FloatArray, dict[str, list[list[float]]], dict[str, list[Any]]]:
    """Pass 2: each fold's mean correction from the other folds' out-of-fold scores, q̂ on every eligible pair
    (hold-out pairs: the mean of the fold models), and each fold's held-out (truth, prediction, weight)."""
    q_hat = np.zeros((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    hold_rows, hold_arms = fits.hold
    hold_preds: dict[str, FloatArray] = {m: np.zeros(hold_rows.size) for m in MODELS}
    corrections: dict[str, list[list[float]]] = {m: [] for m in MODELS}
    held: dict[str, list[Any]] = {m: [] for m in MODELS}
    for f in range(n_folds):
        rows, arms = fits.pair_index[f]
        preds = {}
        for name, (kind, _) in MODELS.items():
            y, usable = labels[name]
            if name in constant:
                preds[name] = np.full(rows.size, constant[name])
                continue
            others = usable & (folds != f) & (folds >= 0)
            c = mean_correction(kind, fits.oof[name][others], y[others], ds.sample_weight[others], ds.actions[others], ds.catalog.n_arms)
            corrections[name].append(c)
            preds[name] = apply_correction(kind, fits.pair_raw[f][name], c, arms)
            if hold_rows.size:
                hold_preds[name] += apply_correction(kind, fits.pair_raw[f][f"hold:{name}"], c, hold_arms) / n_folds
            mine = usable & (folds == f)
            truth = np.expm1(y[mine]) if kind == "log" else y[mine]
            held[name].append((truth, apply_correction(kind, fits.oof[name][mine], c, ds.actions[mine]), ds.sample_weight[mine]))
        q_hat[rows, arms] = _assemble(preds, ds, rows, arms, failed_cost)
    if hold_rows.size:
        hold_preds |= {name: np.full(hold_rows.size, c) for name, c in constant.items()}
        q_hat[hold_rows, hold_arms] = _assemble(hold_preds, ds, hold_rows, hold_arms, failed_cost)
    return q_hat, corrections, held


def predict_q_hat(models: OutcomeModels, ds: BanditDataset, feats: PairFeatures) -> FloatArray:
    """q̂ (n, K, M) of new rows, each scored by the models of its own fold (key mod folds) with that fold's corrections.

    For rows of the same log the models were cross-fitted on (a streamed batch), so no row is
    scored by a model that saw it.
    """
    folds = assign_folds(ds, models.config.folds)
    rows, arms = np.nonzero(ds.eligible)
    q_hat = np.zeros((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    x = feats.pairs(rows, arms)
    for f in range(models.config.folds):
        sel = folds[rows] == f
        if sel.any():
            q_hat[rows[sel], arms[sel]] = _scored(models, ds, x[sel], rows[sel], arms[sel], f)
    return q_hat


def fold_q_hat(models: OutcomeModels, ds: BanditDataset, fold: int) -> FloatArray:
    """q̂ (n, K, M) of every row of the log the models were fitted on, all scored by fold ``fold``'s models.

    What a learner may see when it must not see fold ``fold``'s outcomes: on that fold's rows it is the
    out-of-fold q̂ itself; elsewhere, predictions of a model fitted on the other rows (online routers' cross-fit).
    """
    rows, arms = np.nonzero(ds.eligible)
    q_hat = np.zeros((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    q_hat[rows, arms] = _scored(models, ds, models.features.pairs(rows, arms), rows, arms, fold)
    return q_hat


def mean_q_hat(models: OutcomeModels, ds: BanditDataset, feats: PairFeatures) -> FloatArray:
    """q̂ (n, K, M) of requests the models never saw: each outcome's prediction averaged over the fold models (each with
    its fold's correction), then assembled once (as a hold-out window is scored)."""
    rows, arms = np.nonzero(ds.eligible)
    q_hat = np.zeros((ds.n, ds.catalog.n_arms, len(ds.metrics)))
    q_hat[rows, arms] = _scored(models, ds, feats.pairs(rows, arms), rows, arms, range(models.config.folds))
    return q_hat


def _scored(models: OutcomeModels, ds: BanditDataset, x: FloatArray, rows: npt.NDArray[np.int64], arms: npt.NDArray[np.int64],
            folds: int | range) -> FloatArray:
    """Every metric at the pairs (rows, arms) with features ``x``, by fold ``folds``'s models and corrections (a range:
    each outcome's prediction averaged over those folds' models before the metrics are assembled)."""
    cfg, constants = models.config, models.extra.get("constants", {})
    over = range(folds, folds + 1) if isinstance(folds, int) else folds
    preds = {name: np.full(rows.size, constants[name]) if name in constants else
             _mean([apply_correction(kind, raw_scorer(models.boosters[name][f], cfg.compiled, cfg.predict_threads)(x), models.corrections[name][f], arms)
                    for f in over]) for name, (kind, _) in MODELS.items()}
    return _assemble(preds, ds, rows, arms, models.failed_cost)


def _mean(scores: list[FloatArray]) -> FloatArray:
    """The folds' predictions averaged; one fold's returned as it is (no copies on the streamed scoring path)."""
    return scores[0] if len(scores) == 1 else sum(scores) / len(scores)  # type: ignore[return-value]
