"""The shared estimator machinery: input checks, mergeable accumulation, selection and results.

A concrete estimator only says how to turn prepared arrays into per-row `Terms` at a
hyperparameter level; this module does the rest once for all of them: `partial` turns a batch of
rows into mergeable `Partial` sums, `finalize` turns (merged) sums into an `Estimate`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from estimators._errors import EstimatorInputError, EstimatorSupportError
from estimators.diagnostics import WeightSums
from estimators.estimate import Diagnostics, Estimate
from estimators.feedback import BanditFeedback
from estimators.inference import Inference, Normal, check_alpha
from estimators.reduction import Sums, all_pairs
from estimators.statistic import Kind, Statistic, Terms

__all__ = ["BaseEstimator", "Prepared", "Partial", "SupportWarning"]

FloatArray = npt.NDArray[np.float64]
ROW_SUM_TOL = 1e-6
CELLS_PER_CHUNK = 1 << 21
Level = float | None


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

    def rows(self, sl: slice) -> Prepared:
        """A contiguous block of rows."""
        cut = lambda x: None if x is None else x[sl]  # noqa: E731
        return Prepared(self.w[sl], self.rewards[sl], self.weights[sl], cut(self.dm), cut(self.q_logged))


@dataclass(frozen=True, slots=True)
class Partial:
    """Mergeable sums of one estimator on a batch of rows: add them, then `finalize`.

    Columns are grouped in units, one per hyperparameter level (the last is the untransformed
    reference when the level is chosen automatically), each unit holding the statistic's columns.
    """

    estimator: str
    kind: Kind
    levels: tuple[Level, ...]
    auto: bool
    sums: Sums
    target: WeightSums
    baseline: WeightSums | None
    scalar: bool
    n_boot: int = 0
    seed: int = 0

    def __add__(self, other: Partial) -> Partial:
        mine = (self.estimator, self.kind, self.levels, self.scalar, self.n_boot, self.seed)
        if mine != (other.estimator, other.kind, other.levels, other.scalar, other.n_boot, other.seed):
            raise EstimatorInputError("Only partial sums of the same estimator, statistic and bootstrap can be merged.")
        base = None if self.baseline is None or other.baseline is None else self.baseline + other.baseline
        return Partial(self.estimator, self.kind, self.levels, self.auto, self.sums + other.sums,
                       self.target + other.target, base, self.scalar, self.n_boot, self.seed)


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


def _check_q_hat(fb: BanditFeedback, q_hat: npt.ArrayLike) -> FloatArray:
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
        raise EstimatorInputError("q_hat must be finite on every eligible (row, arm).")
    return np.where(usable[:, :, None], q, 0.0)


class BaseEstimator:
    """Estimate the value of a target policy from logged bandit feedback."""

    name: ClassVar[str] = "base"
    needs_q_hat: ClassVar[bool] = False
    grid: ClassVar[tuple[float, ...]] = ()

    # -- what a concrete estimator provides ---------------------------------------------------
    def _terms_at(self, prep: Prepared, level: Level) -> Terms:
        raise NotImplementedError

    def _setting(self) -> float | str | None:
        """The hyperparameter as configured (a float, "auto"), or None for estimators without one."""
        return None

    def _n_modified(self, w: FloatArray, level: float) -> int:
        """Rows whose weight ``level`` changes."""
        return int((w > level).sum())

    # -- the shared public API ----------------------------------------------------------------
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
        inference = Normal() if inference is None else inference
        part = self.partial(fb, target=target, q_hat=q_hat, n_boot=inference.n_boot, seed=inference.seed)
        return self.finalize(part, inference=inference, alpha=alpha)

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
        inference = Normal() if inference is None else inference
        part = self.partial(fb, target=target, baseline=baseline, q_hat=q_hat, relative=relative,
                            n_boot=inference.n_boot, seed=inference.seed)
        return self.finalize(part, inference=inference, alpha=alpha)

    def partial(
        self,
        fb: BanditFeedback,
        *,
        target: npt.ArrayLike,
        baseline: npt.ArrayLike | None = None,
        q_hat: npt.ArrayLike | None = None,
        relative: bool = False,
        n_boot: int = 0,
        seed: int = 0,
    ) -> Partial:
        """Mergeable sums of one batch of rows (value, or difference / relative with a baseline)."""
        kind: Kind = "value" if baseline is None else ("relative" if relative else "difference")
        setting = self._setting()
        auto = setting == "auto"
        levels: tuple[Level, ...] = (*self.grid, math.inf) if auto else (None if setting is None else float(setting),)  # type: ignore[arg-type]
        q = None
        if self.needs_q_hat:
            if q_hat is None:
                msg = f"{type(self).__name__} needs q_hat, the reward model's predictions of shape (n, K[, M])."
                raise EstimatorInputError(msg)
            q = _check_q_hat(fb, q_hat)
        observed = ~np.isnan(fb.rewards)
        weights = fb.weights[:, None] * observed
        policies = [self._prepare(fb, target, "target", q, weights)]
        if baseline is not None:
            policies.append(self._prepare(fb, baseline, "baseline", q, weights))
        stat = Statistic(kind)
        j = stat.width
        pairs = _pairs(len(levels), j, auto)
        m = fb.n_metrics
        step = max(256, CELLS_PER_CHUNK // (len(pairs) * m))
        total: Sums | None = None
        for start in range(0, fb.n, step):
            sl = slice(start, start + step)
            units = [np.concatenate([self._terms_at(prep.rows(sl), lv).stacked() for prep, _ in policies], axis=1)
                     for lv in levels]
            part = Sums.of(np.concatenate(units, axis=1), weights[sl], pairs=pairs, keys=fb.keys[sl], n_boot=n_boot, seed=seed)
            total = part if total is None else total + part
        assert total is not None
        diag = [ws for _, ws in policies]
        return Partial(self.name, kind, levels, auto, total, diag[0], diag[1] if len(diag) > 1 else None, fb.scalar,
                       n_boot, seed)

    def finalize(
        self, partial: Partial, *, inference: Inference | None = None, alpha: float = 0.05, kind: Kind | None = None
    ) -> Estimate:
        """Turn (merged) partial sums into an `Estimate`.

        ``kind`` overrides the partial's statistic: sums accumulated with a baseline give the
        target's value, the difference and the relative change from one pass over the rows.
        """
        check_alpha(alpha)
        kind = partial.kind if kind is None else kind
        if kind != "value" and partial.baseline is None:
            raise EstimatorInputError(f"A '{kind}' needs partial sums accumulated with a baseline.")
        inference = Normal() if inference is None else inference
        if inference.n_boot and (inference.n_boot, inference.seed) != (partial.n_boot, partial.seed):
            msg = (f"{inference.name} asks for {inference.n_boot} replicates with seed {inference.seed}, but the partial sums "
                   f"hold {partial.n_boot} with seed {partial.seed}: pass n_boot and seed to partial().")
            raise EstimatorInputError(msg)
        stat = Statistic(kind)
        unit = 3 if partial.baseline is None else 6
        chosen = (_choose(partial, stat, unit) if partial.auto else np.zeros(partial.sums.total.shape[0], dtype=np.int64))
        columns = chosen[None, :] * unit + np.arange(stat.width)[:, None]
        sums = partial.sums.select(columns)
        _check_normalizer(self.name, kind, sums)
        fit = inference.fit(stat, sums)
        value = stat.combine(sums.means)
        low, high = fit.ci(alpha)
        diag = self._diagnostics(partial, chosen, with_baseline=kind != "value")
        for note in diag.warnings:
            warnings.warn(f"{self.name}: {note}", SupportWarning, stacklevel=3)
        unwrap = (lambda x: float(x[0])) if partial.scalar else (lambda x: x)  # noqa: E731
        return Estimate(
            estimator=self.name,
            kind=kind,
            value=unwrap(value),
            stderr=unwrap(fit.stderr),
            ci_low=unwrap(low),
            ci_high=unwrap(high),
            alpha=alpha,
            n=unwrap(sums.count),
            ess=diag.ess,
            inference=inference.name,
            diagnostics=diag,
            fit=fit,
            scalar=partial.scalar,
        )

    # -- internals ------------------------------------------------------------------------------
    def _prepare(
        self, fb: BanditFeedback, target: npt.ArrayLike, name: str, q: FloatArray | None, weights: FloatArray
    ) -> tuple[Prepared, WeightSums]:
        pi = _check_target(fb, target, name)
        rows = np.arange(fb.n)
        w = pi[rows, fb.actions] / fb.propensities
        if (weights.sum(axis=0) == 0).any():
            raise EstimatorInputError("Every metric needs at least one observed (non-NaN) reward.")
        dm = None if q is None else np.einsum("nk,nkm->nm", pi, q)
        q_logged = None if q is None else q[rows, fb.actions]
        prep = Prepared(w=w, rewards=np.nan_to_num(fb.rewards), weights=weights, dm=dm, q_logged=q_logged)
        return prep, self._weight_sums(fb, pi, w)

    def _weight_sums(self, fb: BanditFeedback, pi: FloatArray, w: FloatArray) -> WeightSums:
        s = fb.weights
        played = np.zeros(fb.n_arms, dtype=bool)
        played[np.unique(fb.actions)] = True
        unsupported = None
        if fb.logging_probabilities is not None:
            unsupported = float(s @ (pi * (fb.logging_probabilities <= 0)).sum(axis=1))
        setting = self._setting()
        levels = (*self.grid, math.inf) if setting == "auto" else (() if setting is None else (float(setting),))
        return WeightSums(
            n=fb.n, s=float(s.sum()), sw=float(s @ w), s2w=float((s * s) @ w), s2w2=float(((s * w) ** 2).sum()),
            s2=float(s @ s), max_w=float(w.max()), mass=s @ pi, played=played, unsupported=unsupported,
            modified=np.array([self._n_modified(w, lv) for lv in levels], dtype=np.int64),
        )

    def _diagnostics(self, partial: Partial, chosen: npt.NDArray[np.int64], *, with_baseline: bool) -> Diagnostics:
        levels = partial.levels
        hyper: float | tuple[float, ...] | None
        if partial.auto:
            hyper = tuple(float(levels[c]) for c in chosen)
            hyper = hyper[0] if partial.scalar else hyper
        else:
            hyper = None if levels[0] is None or math.isinf(levels[0]) else float(levels[0])
        parts = [partial.target] + ([partial.baseline] if with_baseline and partial.baseline is not None else [])
        diags = []
        for ws in parts:
            n_mod = int(max(ws.modified[c] for c in chosen)) if ws.modified.size else 0
            diags.append(ws.finalize(n_modified=n_mod, hyperparameter=hyper))
        return diags[0] if len(diags) == 1 else _worse(diags[0], diags[1])


def _check_normalizer(name: str, kind: Kind, sums: Sums) -> None:
    """Self-normalized estimators are undefined when the target gives no logged row any weight."""
    blocks = [0] if kind == "value" else [0, 3]
    for start in blocks:
        if (sums.first[start + 2] == 0).any():
            who = "target" if start == 0 else "baseline"
            msg = (f"{name}: the {who} gives zero probability to every logged action, so the normalizer Σ w is 0 and "
                   "a self-normalized estimate is undefined (no overlap with the logging policy).")
            raise EstimatorSupportError(msg)
    if kind == "relative":
        base = Statistic("value").combine(sums.means[3:])
        if (base == 0).any():
            warnings.warn(f"{name}: the baseline's value is 0 for some metrics; their relative change is undefined (NaN).",
                          SupportWarning, stacklevel=4)


def _pairs(n_units: int, j: int, auto: bool) -> npt.NDArray[np.int64]:
    """Column pairs to keep: within every unit, and (when tuning) every unit with the reference."""
    within = all_pairs(j)
    out = [within + u * j for u in range(n_units)]
    if auto:
        ref = (n_units - 1) * j
        a, b = np.meshgrid(np.arange(j), np.arange(j), indexing="ij")
        for u in range(n_units - 1):
            out.append(np.stack([a.ravel() + u * j, b.ravel() + ref], axis=1))
    return np.concatenate(out).astype(np.int64)


def _choose(partial: Partial, stat: Statistic, unit: int) -> npt.NDArray[np.int64]:
    """Per metric, the level whose estimated MSE is smallest (see `estimators.tuning`)."""
    from estimators.tuning import estimated_mse

    return np.argmin(estimated_mse(partial.sums, stat, len(partial.levels), unit), axis=0).astype(np.int64)


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

