"""Replay of the routers that learn online: the one evaluation that walks the log in arrival order.

Rejection sampling (Li et al. 2011; Dudík et al. 2012) lets the router learn from the real outcomes
of the rows it is shown; the other estimators score its rollout on predicted outcomes like any policy.
It needs the whole log in memory and is sequential by nature, so only the in-memory engine offers it.
"""

from __future__ import annotations

from typing import Any

from estimators import EstimatorInputError, Replay
from ope.data.schema import METRICS
from ope.evaluation.batch import BatchRows
from policies import Policy
from policies.stream import time_order

__all__ = ["replay_rows"]


def replay_rows(name: str, policy: Policy, rows: BatchRows, alpha: float, notes: list[str]) -> list[dict[str, Any]]:
    """Replay of an ``online`` policy on the whole log, in arrival order: its estimate rows (estimator "Replay") and a note."""
    ds, fb = rows.dataset, rows.feedback
    try:
        result = Replay(alpha=alpha).estimate(fb.subset(time_order(ds)), policy.online_learner(ds, rows.q_hat))
    except EstimatorInputError as exc:
        notes.append(f"{name}: Replay could not evaluate it as an online learner ({exc}) The other estimators score its "
                     "rollout on predicted outcomes.")
        return []
    scale = float(1.0 / fb.propensities.min())
    notes.append(f"{name}: Replay, which lets it learn online from the rows it is shown, accepted {result.n_accepted:,} of "
                 f"{result.n:,} rows (rejection sampling with M = {scale:.0f}); the other estimators score its rollout on predicted "
                 "outcomes." + (f" {result.n_overflow} rows exceeded M and bias Replay toward the logger." if result.n_overflow else ""))
    return [{"policy": name, "metric": m, "estimator": "Replay", "kind": "value", "value": float(result.value[j]),
             "stderr": float(result.stderr[j]), "ci_low": float(result.ci_low[j]), "ci_high": float(result.ci_high[j]),
             "n": float(result.n_accepted), "ess": float(result.n_accepted)} for j, m in enumerate(METRICS)]
