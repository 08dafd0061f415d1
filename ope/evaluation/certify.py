"""Cross-fit learned policies, and certify a constrained router's targets on rows its fit did not use.

A policy that optimises on predicted outcomes (``cross_fit``, the constrained router) is fitted on
every training row — the rule one deploys — and once per fold on the other folds' rows
(`policies.crossfit`); the run evaluates the fold copies, each on the rows it never saw.

A router that certifies (``certify = true``) then checks each mean target where the fit cannot
flatter it: DR of the cross-fitted policy on the training rows, with out-of-fold q̂, at its one-sided
bound at level 1 − ``certify_alpha`` (lower for a floor, upper for a cap), by the run's interval method
(``[evaluation] inference``: skew-corrected by default). Where a bound misses its
target, the target the LP solves for is made stricter by the miss and everything is refitted, at
most ``certify_rounds`` times. The router's optimism (it picks the arms q̂ overrates) is thereby
paid for in its targets rather than discovered after rollout. With the default ``certify_alpha``
= 0.025, a target holds at that bound exactly when the run's 95 % interval lies on its right side.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from estimators import DR, EstimatorInputError, SupportWarning
from estimators.inference import Inference
from ope.evaluation.batch import BatchRows
from policies import Policy, PolicyError
from policies.base import DeclaredTarget, declared_targets
from policies.crossfit import CrossFitted, cross_fit

__all__ = ["Certification", "TargetCertificate", "fit_cross_fitted"]


@dataclass(frozen=True, slots=True)
class TargetCertificate:
    """One target after certification: what was asked, what the LP solved for, what the router predicts,
    and the DR estimate on held-out folds with its one-sided bound."""

    key: str
    metric: str
    target: float
    sense: float
    solved_at: float
    predicted: float
    estimate: float
    bound: float
    holds: bool


@dataclass
class Certification:
    """A router's certificate: ``status`` "certified", "not certified" or "not checked", and why."""

    policy: str
    folds: int
    alpha: float
    rounds: int
    status: str
    reason: str = ""
    targets: list[TargetCertificate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (summary.json, the router's JSON)."""
        return {"policy": self.policy, "folds": self.folds, "alpha": self.alpha, "rounds": self.rounds, "status": self.status,
                "reason": self.reason, "targets": [asdict(t) for t in self.targets]}


def fit_cross_fitted(policy: Policy, rows: BatchRows, folds: int, *, inference: Inference, weighted: bool = True,
                     feedback: bool = True) -> tuple[CrossFitted, Certification | None]:
    """Fit ``policy`` on every row of ``rows`` and its fold copies; certify it where it asks to.

    ``weighted`` False (no overlap to weight by) or a policy without targets skips certification;
    ``feedback`` False leaves satisfaction targets uncertified (the log has no satisfaction values);
    ``inference`` is the run's interval method (`ope.evaluation.plan.build_inference`), whose one-sided bounds the
    targets are held to, so a certified target is one the run's own interval shows to hold.
    """
    ds, q = rows.dataset, rows.q_hat
    targets = declared_targets(policy)
    settings = policy.certify_settings()
    if settings is None or not targets:
        policy.fit(ds, q)
        return CrossFitted(policy, cross_fit(policy, ds, q, folds)), None
    alpha, rounds = settings
    cert = Certification(policy.name, folds, alpha, 0, "not checked")
    if not weighted:
        policy.tighten({}).fit(ds, q)  # type: ignore[attr-defined]
        cert.reason = "the log leaves no overlap to weight by, so DR cannot check the targets"
        return CrossFitted(policy, cross_fit(policy, ds, q, folds)), cert
    kept: tuple[dict[str, float], list[Policy]] | None = None
    step, current = dict.fromkeys((t.key for t in targets), 0.0), True
    last: dict[str, tuple[float, float]] = {}  # target key → (shift, bound) of the last round it was checked
    for attempt in range(rounds + 1):
        shifts = {k: (kept[0][k] if kept else 0.0) + v for k, v in step.items()}
        try:
            copies = cross_fit(policy.tighten(shifts), ds, q, folds)  # type: ignore[attr-defined]
            policy.fit(ds, q)
        except PolicyError as exc:
            if kept is None:
                raise
            cert.reason, current = f"tightening further is infeasible ({str(exc).splitlines()[-1]})", False
            step = {k: v / 2 for k, v in step.items()}  # halfway to the last step that could not be met
            continue
        kept, cert.rounds, current, cert.reason = (shifts, copies), attempt, True, ""
        cert.targets = _checked(policy, CrossFitted(policy, copies), rows, targets, shifts, alpha, feedback, inference)
        missed = [t for t in cert.targets if not t.holds and np.isfinite(t.bound)]
        if not missed:
            break
        step = {k: 0.0 for k in step} | {t.key: _step(t, shifts[t.key], last.get(t.key)) for t in missed}
        last = {t.key: (shifts[t.key], t.bound) for t in cert.targets}
    assert kept is not None
    if not current:
        policy.tighten(kept[0]).fit(ds, q)  # type: ignore[attr-defined]
    cert.status = "certified" if cert.targets and all(t.holds for t in cert.targets) else "not certified"
    if cert.status == "not certified" and not cert.reason:
        cert.reason = (f"a bound still misses its target after {rounds} tightening rounds" if rounds
                       else "certify_rounds = 0: the targets were checked, not tightened")
    policy.certificate_ = cert.to_dict()  # type: ignore[attr-defined]
    return CrossFitted(policy, kept[1]), cert


def _step(t: TargetCertificate, shift: float, before: tuple[float, float] | None) -> float:
    """How much stricter to solve next: the bound's miss divided by how far the bound moved per unit of the last
    tightening (a secant, between 0.2 and 1; 1 in the first round), with 5 % to spare."""
    miss = t.sense * (t.bound - t.target)
    slope = 1.0
    if before is not None and shift != before[0]:
        slope = float(np.clip(-t.sense * (t.bound - before[1]) / (shift - before[0]), 0.2, 1.0))
    return 1.05 * miss / slope


def _checked(policy: Policy, evaluated: CrossFitted, rows: BatchRows, targets: tuple[DeclaredTarget, ...],
             shifts: dict[str, float], alpha: float, feedback: bool, inference: Inference) -> list[TargetCertificate]:
    """Every target of the cross-fitted policy at DR's one-sided (1 − alpha) bound on ``rows`` by ``inference``."""
    ds, metrics = rows.dataset, rows.dataset.metrics
    pi = evaluated.action_probabilities(ds, rows.q_hat)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SupportWarning)
            est = DR().estimate(rows.feedback, target=pi, q_hat=rows.q_hat, inference=inference)
        value = np.asarray(est.value, dtype=np.float64)
        low, high = (np.asarray(b, dtype=np.float64) for b in est.ci(2 * alpha))
    except EstimatorInputError:
        value = low = high = np.full(len(metrics), np.nan)
    fitted = policy.predicted_values()
    out = []
    for t in targets:
        if t.quantile is not None:
            out.append(_checked_tail(policy, pi, rows, t, shifts, alpha, fitted, inference))
            continue
        j = metrics.index(t.metric)
        usable = feedback or t.metric != "satisfaction"
        bound = float(low[j] if t.sense < 0 else high[j]) if usable else float("nan")
        out.append(TargetCertificate(t.key, t.metric, t.target, t.sense, t.target - t.sense * shifts.get(t.key, 0.0),
                                     float(fitted.get(t.metric, np.nan)), float(value[j]) if usable else float("nan"), bound,
                                     bool(np.isfinite(bound) and t.met_by(bound))))
    return out


def _checked_tail(policy: Policy, pi: np.ndarray, rows: BatchRows, t: DeclaredTarget, shifts: dict[str, float], alpha: float,
                  fitted: dict[str, float], inference: Inference) -> TargetCertificate:
    """A p95 cap (p95 ≤ T) certified as the floor P(Y ≤ T) ≥ 0.95: DR of the indicator 1{y ≤ T}, with the router's own
    column P(Y ≤ T | x, a) as q̂, at its lower one-sided bound; tightening raises the level the LP solves for."""
    ds = rows.dataset
    assert t.quantile is not None and rows.q_hat is not None
    q, names = policy.with_tails(rows.q_hat, tuple(ds.metrics))  # type: ignore[attr-defined]
    column = next(j for j, name in enumerate(names) if name.startswith(f"P({t.metric} <=") and name.endswith(f"{t.target:g})"))
    hit = (rows.feedback.rewards[:, ds.metrics.index(t.metric)] <= t.target).astype(np.float64)
    feedback = dataclasses.replace(rows.feedback, rewards=hit)
    label = f"P({t.metric} <= {t.target:g})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SupportWarning)
            est = DR().estimate(feedback, target=pi, q_hat=q[:, :, column], inference=inference)
        value, bound = float(est.value), float(est.ci(2 * alpha)[0])
    except EstimatorInputError:
        value = bound = float("nan")
    level = t.quantile
    return TargetCertificate(t.key, label, level, -1.0, level + shifts.get(t.key, 0.0), float(fitted.get(t.key, np.nan)), value,
                             bound, bool(np.isfinite(bound) and bound >= level))
