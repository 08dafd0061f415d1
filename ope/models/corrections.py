"""Mean corrections of out-of-fold predictions: what turns a LightGBM score into an unbiased mean.

A log-scale model predicts a conditional median of Y (the mean of log Y); its exponential needs a
smearing factor to estimate a mean. A probability model fitted out of fold is overconfident; a
logit shift restores its mean. Each is estimated on other folds' out-of-fold scores
(`ope.models.predictors`), so no row's prediction uses its own label.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import expit

__all__ = ["PRIOR_ROWS", "apply_correction", "mean_correction"]

FloatArray = npt.NDArray[np.float64]


#: pseudo-rows at the pooled smearing factor that each arm's own factor is shrunk toward
PRIOR_ROWS = 100.0


def mean_correction(kind: str, raw: FloatArray, y: FloatArray, w: FloatArray, arms: npt.NDArray[np.int64], k: int) -> list[float]:
    """Each arm's mean correction, estimated on out-of-fold predictions of other folds.

    Log-scale models: Duan's smearing factor E[exp(residual)], so exp(prediction) estimates a mean,
    not a median; one per arm, since the residual spread differs by provider (a fast arm's rare
    stalls are a far heavier tail than a slow arm's): the group-wise smearing of heteroscedastic
    retransformation (Manning 1998), each arm shrunk toward the pooled factor by `PRIOR_ROWS`
    pseudo-rows, so an arm seldom logged keeps about the pooled one. Probability models: one logit
    shift for every arm, which makes the mean prediction match the observed rate (rare failures are
    otherwise under-predicted out of fold).
    """
    if kind == "log":
        weight = np.bincount(arms, weights=w, minlength=k)
        rows = weight * (w.size / w.sum())  # each arm's weight, in rows
        factor = np.bincount(arms, weights=w * np.exp(y - raw), minlength=k) / np.maximum(weight, 1e-300)
        pooled = np.average(np.exp(y - raw), weights=w)
        return ((rows * factor + PRIOR_ROWS * pooled) / (rows + PRIOR_ROWS)).tolist()  # type: ignore[no-any-return]
    target, shift = float(np.average(y, weights=w)), 0.0
    for _ in range(30):  # Newton on the mean of σ(raw + shift)
        p = expit(raw + shift)
        gap, slope = np.average(p, weights=w) - target, np.average(p * (1 - p), weights=w)
        if abs(gap) < 1e-10 or slope <= 0:
            break
        shift -= gap / slope
    return [float(shift)] * k


def apply_correction(kind: str, raw: FloatArray, correction: float | list[float], arms: npt.NDArray[np.int64]) -> FloatArray:
    """Predictions on the outcome's own scale from raw scores and a fold's correction (per arm; one number in a manifest
    written before corrections were per arm)."""
    c = np.asarray(correction, dtype=np.float64)
    c = c[arms] if c.ndim else c
    if kind == "log":
        return np.expm1(raw) * c + (c - 1.0)  # exp(raw) · smear − 1
    return expit(raw + c)  # type: ignore[no-any-return]  # the logistic function, without overflow
