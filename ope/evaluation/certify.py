"""Cross-fit learned policies, and certify a constrained router's targets on rows its fit did not use.

A policy that optimises on predicted outcomes (``cross_fit``, the constrained router) is fitted on
every training row — the rule one deploys — and once per fold on the other folds' rows
(`policies.crossfit`); the run evaluates the fold copies, each on the rows it never saw.

A router that certifies (``certify = true``) then checks each target where the fit cannot flatter
it: DR of the cross-fitted policy, with out-of-fold q̂, at its one-sided bound at level
1 − ``certify_alpha`` (lower for a floor, upper for a cap), by the run's interval method
(``[evaluation] inference``: arm-pooled by default). Where a bound misses its target, the target
the LP solves for is made stricter by the miss and everything is refitted, at most
``certify_rounds`` times. The router's optimism (it picks the arms q̂ overrates) is thereby paid
for in its targets rather than discovered after rollout.

How strict each fold copy is gets decided without the rows it routes: copy f keeps the first round
whose bounds on the *other* folds' rows meet every target, and the deployed rule the first round
whose bounds on every row do. Deciding on the rows that are then reported would keep the rounds
whose estimate came out high — a selection effect of the very estimate the run reports, which
made its intervals cover the truth less often. The certificate states DR of the evaluated copies
on every row: with the default ``certify_alpha`` = 0.025 a target holds exactly when the run's 95 %
interval lies on its right side.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from estimators import DR, BanditFeedback, EstimatorInputError, SupportWarning
from estimators.inference import Inference
from ope.evaluation.batch import BatchRows
from policies import Policy, PolicyError
from policies.base import DeclaredTarget, declared_targets
from policies.crossfit import CrossFitted, cross_fit, key_folds
from policies.tails import tail_column

__all__ = ["Certification", "TargetCertificate", "fit_cross_fitted"]

Solved = list[tuple[int, dict[str, float], list[Policy]]]  # (attempt, shifts, copies) of every round that solved


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
    """A router's certificate: ``status`` "certified", "not certified" or "not checked", and why.

    ``rounds`` is the tightening round the deployed rule was kept from, ``fold_rounds`` each fold copy's, and
    ``folds_met`` whether that copy's bounds on the other folds' rows met every target (False: it kept the last round).
    """

    policy: str
    folds: int
    alpha: float
    rounds: int
    status: str
    reason: str = ""
    targets: list[TargetCertificate] = field(default_factory=list)
    fold_rounds: list[int] = field(default_factory=list)
    folds_met: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (summary.json, the router's JSON)."""
        return {"policy": self.policy, "folds": self.folds, "alpha": self.alpha, "rounds": self.rounds, "status": self.status,
                "reason": self.reason, "targets": [asdict(t) for t in self.targets], "fold_rounds": self.fold_rounds,
                "folds_met": self.folds_met}


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
    checks = [_Check.of(t) for t in targets]
    fold = key_folds(ds.keys, folds)
    judged = [fold != f for f in range(folds)] + [np.ones(ds.n, dtype=bool)]  # copy f's judges, then the deployed rule's

    def estimates(pi: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
        return _estimates(policy, pi, rows, mask, checks, alpha, feedback, inference)

    solved, chosen, infeasible = _tighten(policy, rows, folds, checks, judged, estimates, rounds)
    pick = [chosen.get(unit, len(solved) - 1) for unit in range(len(judged))]
    evaluated = CrossFitted(policy, [solved[pick[f]][2][f] for f in range(folds)])
    cert.rounds, shifts, _ = solved[pick[-1]]
    cert.fold_rounds, cert.folds_met = [solved[i][0] for i in pick[:-1]], [f in chosen for f in range(folds)]
    policy.tighten(shifts).fit(ds, q)  # type: ignore[attr-defined]
    fitted = policy.predicted_values()
    cert.targets = [TargetCertificate(c.key, c.label, c.target, c.sense, c.target - c.sense * shifts[c.key],
                                      float(fitted.get(c.predicted, np.nan)), value, bound, c.holds(bound))
                    for c, (value, bound) in zip(checks, estimates(evaluated.action_probabilities(ds, q), judged[-1]))]
    cert.status = "certified" if cert.targets and all(t.holds for t in cert.targets) else "not certified"
    if cert.status == "not certified":
        cert.reason = infeasible or (
            "every fold's copy met its targets on the other folds' rows, but the bound on the rows they route misses"
            if len(chosen) == len(judged) else f"a bound still misses its target after {rounds} tightening rounds" if rounds
            else "certify_rounds = 0: the targets were checked, not tightened")
    policy.certificate_ = cert.to_dict()  # type: ignore[attr-defined]
    return evaluated, cert


def _tighten(policy: Policy, rows: BatchRows, folds: int, checks: list[_Check], judged: list[np.ndarray],
             estimates: Callable[[np.ndarray, np.ndarray], list[tuple[float, float]]], rounds: int
             ) -> tuple[Solved, dict[int, int], str]:
    """The tightening rounds: every round that solved, the first round each unit (fold copy f, or ``folds`` for the
    deployed rule) met every target on its judges ``judged[unit]``, and why the last attempt failed ("" if it solved)."""
    ds, q = rows.dataset, rows.q_hat
    solved: Solved = []
    chosen: dict[int, int] = {}  # unit (fold copy f, or `folds` for the deployed rule) → first solved round met on its judges
    step, infeasible = dict.fromkeys((c.key for c in checks), 0.0), ""
    last: dict[str, tuple[float, float]] = {}  # target key → (shift, bound on every row) of the last solved round
    for attempt in range(rounds + 1):
        shifts = {k: (solved[-1][1][k] if solved else 0.0) + v for k, v in step.items()}
        try:
            copies = cross_fit(policy.tighten(shifts), ds, q, folds)  # type: ignore[attr-defined]
        except PolicyError as exc:
            if not solved:
                raise
            infeasible = f"tightening further is infeasible ({str(exc).splitlines()[-1]})"
            step = {k: v / 2 for k, v in step.items()}  # halfway to the last step that could not be met
            continue
        solved.append((attempt, shifts, copies))
        infeasible = ""
        pi = CrossFitted(policy, copies).action_probabilities(ds, q)
        bounds = [[b for _, b in estimates(pi, mask)] for mask in judged]
        for unit, unit_bounds in enumerate(bounds):
            if unit not in chosen and not any(c.missed(b) for c, b in zip(checks, unit_bounds)):
                chosen[unit] = len(solved) - 1
        if len(chosen) == len(judged):
            break
        # the deployed rule's own misses set the pace until it is met (so it is tightened no further than its own
        # bounds ask), then the worst miss among the copies still unmet
        pacing = [bounds[-1]] if folds not in chosen else [b for u, b in enumerate(bounds) if u not in chosen]
        now = {c.key: (shifts[c.key], bounds[-1][i]) for i, c in enumerate(checks)}
        step = {c.key: max([_step(c, b[i], now[c.key], last.get(c.key)) for b in pacing if c.missed(b[i])], default=0.0)
                for i, c in enumerate(checks)}
        last = now
    return solved, chosen, infeasible


@dataclass(frozen=True, slots=True)
class _Check:
    """A declared target in the form certification checks: a mean, or a p95 cap as the floor P(Y ≤ T) ≥ 0.95."""

    key: str
    label: str
    target: float
    sense: float
    predicted: str  # the key of `Policy.predicted_values` that holds the router's own prediction
    metric: str
    threshold: float | None = None  # a p95 cap's T; None for a mean

    @classmethod
    def of(cls, t: DeclaredTarget) -> _Check:
        if t.quantile is None:
            return cls(t.key, t.metric, t.target, t.sense, t.metric, t.metric)
        return cls(t.key, tail_column(t.metric, t.target), t.quantile, -1.0, t.key, t.metric, t.target)

    def holds(self, bound: float) -> bool:
        return bool(np.isfinite(bound) and self.sense * (bound - self.target) <= 0)

    def missed(self, bound: float) -> bool:
        """A bound that could be checked and misses (an unusable bound stops no tightening)."""
        return bool(np.isfinite(bound) and not self.holds(bound))


def _step(c: _Check, bound: float, now: tuple[float, float], before: tuple[float, float] | None) -> float:
    """How much stricter to solve next for a bound that misses: the miss divided by how far the bound on every row
    moved per unit of the last tightening (``now`` and ``before``: shift and that bound; a secant between 0.2 and 1,
    1 in the first round), with 5 % to spare."""
    slope = 1.0
    if before is not None and now[0] != before[0] and np.isfinite(now[1] - before[1]):
        slope = float(np.clip(-c.sense * (now[1] - before[1]) / (now[0] - before[0]), 0.2, 1.0))
    return 1.05 * c.sense * (bound - c.target) / slope


def _estimates(policy: Policy, pi: np.ndarray, rows: BatchRows, mask: np.ndarray, checks: list[_Check],
               alpha: float, feedback: bool, inference: Inference) -> list[tuple[float, float]]:
    """DR estimate and one-sided (1 − alpha) bound by ``inference`` of every target, on the rows in ``mask``."""
    metrics = rows.dataset.metrics
    assert rows.q_hat is not None
    sub, q, pi = rows.feedback.subset(mask), rows.q_hat[mask], pi[mask]
    value, low, high = _dr(sub, pi, q, alpha, inference)
    if any(c.threshold is not None for c in checks):  # the p95 caps' columns P(Y ≤ T), once for every tail target
        tails, names = policy.with_tails(q, tuple(metrics))  # type: ignore[attr-defined]
    out = []
    for c in checks:
        if c.threshold is None:
            j = metrics.index(c.metric)
            usable = feedback or c.metric != "satisfaction"
            out.append((float(value[j]), float(low[j] if c.sense < 0 else high[j])) if usable else (np.nan, np.nan))
            continue
        column = next(j for j, name in enumerate(names) if name == c.label)
        hit = (sub.rewards[:, metrics.index(c.metric)] <= c.threshold).astype(np.float64)
        v, lo, _ = _dr(dataclasses.replace(sub, rewards=hit), pi, tails[:, :, column], alpha, inference)
        out.append((float(v), float(lo)))
    return out


def _dr(feedback: BanditFeedback, pi: np.ndarray, q: np.ndarray, alpha: float, inference: Inference) -> tuple[Any, Any, Any]:
    """DR's value and two-sided (1 − 2·alpha) interval, NaN where the rows cannot be weighted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SupportWarning)
            est = DR().estimate(feedback, target=pi, q_hat=q, inference=inference)
        low, high = est.ci(2 * alpha)
        return np.asarray(est.value, dtype=np.float64), np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    except EstimatorInputError:
        nan = np.full(feedback.n_metrics, np.nan)
        return nan, nan, nan
