"""The predictable q̂ of `ope monitor`'s doubly robust sequences: outcome models fitted on the history log only.

The doubly robust terms (`estimators.canary`) stay valid for any q̂ fixed before the row it scores is
seen. Models fitted on the config's ``[data] logs`` (the history the offline decision was made on)
never see the canary, so each canary row's q̂(x, ·) depends only on its context and on earlier canary
rows (the recent-history features look only at rows strictly before it). The models are fitted
once and kept in ``<[output] dir>/monitor/models-<hash>.json`` (LightGBM's text format, `ope.models.serialization`),
keyed by the SHA-256 of the history's and the catalog's bytes and the ``[predictors]`` settings, so
later calls, and other canaries of the same history, reuse them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ope.config import ExperimentConfig
from ope.data.dataset import BanditDataset
from ope.data.readers import log_files
from ope.models.features import build_features
from ope.models.predictors import OutcomeModels, fit_outcome_models, predict_q_hat
from ope.models.serialization import models_from_text, models_to_text

__all__ = ["canary_q_hat", "history_models"]

FloatArray = npt.NDArray[np.float64]


def _key(cfg: ExperimentConfig) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg.predictors), sort_keys=True).encode())
    for path in (*log_files(cfg.data.logs), *log_files(cfg.data.catalog)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def history_models(cfg: ExperimentConfig, folder: Path) -> OutcomeModels:
    """Outcome models fitted on the config's history log, read from ``folder`` when an earlier call saved them."""
    path = folder / f"models-{_key(cfg)}.json"
    if path.exists():
        models, _ = models_from_text(path.read_text())
        if models is not None:
            return models
    history = BanditDataset.load(cfg.data.logs, cfg.data.catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms)
    models = fit_outcome_models(history, cfg.predictors)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(models_to_text(models, None))
    return models


def canary_q_hat(models: OutcomeModels, ds: BanditDataset, first: int, columns: list[int], high: FloatArray,
                 policies: tuple[FloatArray, FloatArray]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """q̂ of rows ``first:`` of ``ds`` (every row read, in time order, so history features see the earlier ones), for
    metric ``columns`` clipped to [0, ``high``]: of the logged arm, under the policy and under the baseline
    (``policies``: their (n_new, K) probabilities), each (n_new, len(columns))."""
    feats = build_features(ds, window_hours=models.config.history_hours)
    rows = np.arange(first, ds.n)
    new = ds.subset(np.isin(np.arange(ds.n), rows))
    feats = dataclasses.replace(feats, request=feats.request[rows], price_in=feats.price_in[rows],
                                price_out=feats.price_out[rows], history=feats.history[rows])
    q = np.clip(predict_q_hat(models, new, feats)[:, :, columns], 0.0, high)
    logged = q[np.arange(new.n), new.actions]
    return logged, np.einsum("nk,nkm->nm", policies[0], q), np.einsum("nk,nkm->nm", policies[1], q)
