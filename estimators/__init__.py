"""Off-policy estimators on plain arrays (DESIGN §5). They know nothing of LLMs."""

from __future__ import annotations

from estimators._errors import EstimatorInputError, EstimatorSupportError
from estimators.armpooled import ArmPooled
from estimators.base import BaseEstimator, SupportWarning
from estimators.combined import Partials, evaluate_all, finalize_all, partial_all
from estimators.dm import DM
from estimators.dr import DR, SNDR, DRos, SwitchDR
from estimators.estimate import Diagnostics, Estimate
from estimators.feedback import BanditFeedback
from estimators.inference import Bootstrap, EmpiricalBernstein, Normal, SkewCorrected
from estimators.ips import IPS, SNIPS
from estimators.replay import OnlinePolicy, Replay, ReplayResult
from estimators.target import SparseTarget

__all__ = [
    "ArmPooled",
    "BanditFeedback",
    "BaseEstimator",
    "Bootstrap",
    "DM",
    "DR",
    "DRos",
    "Diagnostics",
    "EmpiricalBernstein",
    "Estimate",
    "EstimatorInputError",
    "EstimatorSupportError",
    "IPS",
    "Normal",
    "OnlinePolicy",
    "Partials",
    "Replay",
    "ReplayResult",
    "SNDR",
    "SNIPS",
    "SkewCorrected",
    "SparseTarget",
    "SupportWarning",
    "SwitchDR",
    "ESTIMATORS",
    "evaluate_all",
    "finalize_all",
    "partial_all",
]

#: every estimator class by name, as configs refer to them
ESTIMATORS: dict[str, type[BaseEstimator]] = {
    cls.name: cls for cls in (IPS, SNIPS, DM, DR, SNDR, SwitchDR, DRos)
}
