"""The shared estimator machinery: input checks, importance weights, diagnostics and results.

A concrete estimator only says how to turn prepared arrays into per-row `Terms`; this module does
the rest once for all of them (STYLE: frozen settings objects, one shared inference module).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError, EstimatorSupportError
from estimators.estimate import Diagnostics, Estimate
from estimators.feedback import BanditFeedback
from estimators.inference import Inference, Normal
from estimators.statistic import Kind, Statistic, Terms

__all__ = ["BaseEstimator", "Prepared", "SupportWarning"]

FloatArray = npt.NDArray[np.float64]
ROW_SUM_TOL = 1e-6


class SupportWarning(UserWarning):
    """The target policy relies on arms or contexts the logger rarely or never tried."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """Validated arrays an estimator needs, metrics always on the last axis.

    w (n,) importance weights; rewards (n, M) with missing set to 0; weights (n, M) = sample weight
    × observed; dm (n, M) = Σ_a π(a|x) q̂(x, a) and q_logged (n, M) = q̂(x, a_i), or None without q̂.
    """

    w: FloatArray
    rewards: FloatArray
    weights: FloatArray
    dm: FloatArray | None
    q_logged: FloatArray | None


def _check_target(fb: BanditFeedback, target: npt.ArrayLike, name: str) -> FloatArray:
    pi = np.asarray(target, dtype=np.float64)
    if pi.shape != (fb.n, fb.n_arms):
        msg = f"{name} must have shape (n, K) = {(fb.n, fb.n_arms)}. Got {pi.shape}."
        raise EstimatorInputError(msg)
    if not np.isfinite(pi).all() or (pi < -1e-12).any():
        raise EstimatorInputError(f"{name} must hold finite, non-negative probabilities.")
    sums = pi.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOL
    if off.any():
        rows = np.flatnonzero(off)[:5].tolist()
        msg = f"{name} rows must sum to 1. {int(off.sum())} rows do not (first rows {rows}: sums {sums[rows].tolist()})."
        raise EstimatorInputError(msg)
    if fb.eligible is not None:
        outside = (pi * ~fb.eligible).sum(axis=1) > 1e-9
        if outside.any():
            rows = np.flatnonzero(outside)[:5].tolist()
            msg = f"{name} puts probability outside the eligible set on {int(outside.sum())} rows (first rows {rows})."
            raise EstimatorSupportError(msg)
    return pi


def _check_q_hat(fb: BanditFeedback, q_hat: npt.ArrayLike, name: str) -> FloatArray:
    q = np.asarray(q_hat, dtype=np.float64)
    if fb.scalar and q.ndim == 2:
        q = q[:, :, None]
    want = (fb.n, fb.n_arms, fb.n_metrics)
    if q.shape != want:
        shown = want[:2] if fb.scalar else want
        msg = f"q_hat must have shape {shown} to match the feedback. Got {np.asarray(q_hat).shape}."
        raise EstimatorInputError(msg)
    usable = np.ones(q.shape[:2], dtype=bool) if fb.eligible is None else fb.eligible
    if not np.isfinite(q[usable]).all():
        raise EstimatorInputError(f"{name} must be finite on every eligible (row, arm).")
    return np.where(usable[:, :, None], q, 0.0)


class BaseEstimator:
    """Estimate the value of a target policy from logged bandit feedback."""

    name: ClassVar[str] = "base"
    needs_q_hat: ClassVar[bool] = False

    # -- what a concrete estimator provides ---------------------------------------------------
    def _terms(self, prep: Prepared) -> Terms:
        raise NotImplementedError

    # -- the shared public API --------------------------------------------------------------
    def estimate(
        self,
        fb: BanditFeedback,
        *,
        target: npt.ArrayLike,
        q_hat: npt.ArrayLike | None = None,
        inference: Inference | None = None,
        alpha: float = 0.05,
    ) -> Estimate:
        """Value of ``target`` (n, K) on the logged contexts, with interval and diagnostics."""
        prep, diag = self._prepare(fb, target, q_hat, "target")
        terms = self._terms(prep)
        return self._finish(fb, Statistic(terms), _with_terms(diag, terms), inference, alpha)

    def estimate_difference(
        self,
        fb: BanditFeedback,
        *,
        target: npt.ArrayLike,
        baseline: npt.ArrayLike,
        q_hat: npt.ArrayLike | None = None,
        inference: Inference | None = None,
        alpha: float = 0.05,
        relative: bool = False,
    ) -> Estimate:
        """Paired target − baseline on the same rows, or with ``relative`` the change in %."""
        prep_t, diag_t = self._prepare(fb, target, q_hat, "target")
        prep_b, diag_b = self._prepare(fb, baseline, q_hat, "baseline")
        kind: Kind = "relative" if relative else "difference"
        terms_t, terms_b = self._terms(prep_t), self._terms(prep_b)
        stat = Statistic(terms_t, terms_b, kind)
        diag = _worse(_with_terms(diag_t, terms_t), _with_terms(diag_b, terms_b))
        return self._finish(fb, stat, diag, inference, alpha)

    # -- internals -----------------------------------------------------------------------------
    def _prepare(
        self, fb: BanditFeedback, target: npt.ArrayLike, q_hat: npt.ArrayLike | None, name: str
    ) -> tuple[Prepared, Diagnostics]:
        pi = _check_target(fb, target, name)
        rows = np.arange(fb.n)
        w = pi[rows, fb.actions] / fb.propensities
        observed = ~np.isnan(fb.rewards)
        weights = fb.weights[:, None] * observed
        if (weights.sum(axis=0) == 0).any():
            raise EstimatorInputError("Every metric needs at least one observed (non-NaN) reward.")
        dm = q_logged = None
        if self.needs_q_hat:
            if q_hat is None:
                msg = f"{type(self).__name__} needs q_hat, the reward model's predictions of shape (n, K[, M])."
                raise EstimatorInputError(msg)
            q = _check_q_hat(fb, q_hat, "q_hat")
            dm = np.einsum("nk,nkm->nm", pi, q)
            q_logged = q[rows, fb.actions]
        prep = Prepared(w=w, rewards=np.nan_to_num(fb.rewards), weights=weights, dm=dm, q_logged=q_logged)
        return prep, self._diagnostics(fb, pi, w)

    def _diagnostics(self, fb: BanditFeedback, pi: FloatArray, w: FloatArray) -> Diagnostics:
        s = fb.weights
        sw = s * w
        ess = float(sw.sum() ** 2 / (sw**2).sum()) if sw.any() else 0.0
        total = s.sum()
        mean_w = float(sw.sum() / total)
        n = fb.n
        se = float(np.sqrt((s**2 * (w - mean_w) ** 2).sum() / total**2 * n / max(n - 1, 1)))
        flag = abs(mean_w - 1) > max(4 * se, 0.05)
        unsupported = _unsupported(fb, pi)
        share = float((s * unsupported).sum() / total)
        notes = []
        if share > 0.001:
            notes.append(
                f"{share:.1%} of the target's probability is on arms the logger never played in that "
                "context; importance-weighted estimates ignore it and model-based ones extrapolate."
            )
        if flag:
            notes.append(
                f"Mean importance weight is {mean_w:.3f} (± {se:.3f}), not 1: propensities may be wrong "
                "or the target leaves the logger's support."
            )
        if ess < 0.01 * n:
            notes.append(f"Effective sample size {ess:.0f} is under 1% of {n} rows: the estimate is fragile.")
        return Diagnostics(
            ess=ess,
            max_weight=float(w.max()),
            mean_weight=mean_w,
            mean_weight_se=se,
            mean_weight_flag=bool(flag),
            unsupported_share=share,
            warnings=tuple(notes),
        )

    def _finish(
        self, fb: BanditFeedback, stat: Statistic, diag: Diagnostics, inference: Inference | None, alpha: float
    ) -> Estimate:
        inference = Normal() if inference is None else inference
        value = stat.point()
        fit = inference.fit(stat, value, fb.keys)
        low, high = fit.ci(alpha)
        for note in diag.warnings:
            warnings.warn(f"{self.name}: {note}", SupportWarning, stacklevel=3)
        n = (stat.weights > 0).sum(axis=0).astype(np.float64)
        unwrap = (lambda x: float(x[0])) if fb.scalar else (lambda x: x)  # noqa: E731
        return Estimate(
            estimator=self.name,
            kind=stat.kind,
            value=unwrap(value),
            stderr=unwrap(fit.stderr),
            ci_low=unwrap(low),
            ci_high=unwrap(high),
            alpha=alpha,
            n=unwrap(n),
            ess=diag.ess,
            inference=inference.name,
            diagnostics=diag,
            fit=fit,
            scalar=fb.scalar,
        )


def _unsupported(fb: BanditFeedback, pi: FloatArray) -> FloatArray:
    """Per-row target mass on arms the logger could not have played (n,)."""
    if fb.logging_probabilities is not None:
        return (pi * (fb.logging_probabilities <= 0)).sum(axis=1)
    played = np.zeros(fb.n_arms, dtype=bool)
    played[np.unique(fb.actions)] = True
    return pi[:, ~played].sum(axis=1)


def _with_terms(diag: Diagnostics, terms: Terms) -> Diagnostics:
    return replace(diag, n_modified=terms.n_modified, hyperparameter=terms.hyperparameter)


def _worse(a: Diagnostics, b: Diagnostics) -> Diagnostics:
    """Diagnostics of a paired comparison: the worse of the two policies on each count."""
    pick = a if a.ess <= b.ess else b
    return Diagnostics(
        ess=min(a.ess, b.ess),
        max_weight=max(a.max_weight, b.max_weight),
        mean_weight=pick.mean_weight,
        mean_weight_se=pick.mean_weight_se,
        mean_weight_flag=a.mean_weight_flag or b.mean_weight_flag,
        unsupported_share=max(a.unsupported_share, b.unsupported_share),
        n_modified=max(a.n_modified, b.n_modified),
        hyperparameter=a.hyperparameter,
        warnings=tuple(dict.fromkeys(a.warnings + b.warnings)),
    )
