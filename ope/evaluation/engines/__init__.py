"""Engines decide only how a log is cut into batches and where the batches are evaluated.

``memory``: the whole log as one batch; ``local``: batches streamed on this machine; ``ray``: the
local engine's survey and fit, with batches evaluated as Ray tasks. Every engine runs the same
per-batch evaluation (`ope.evaluation.batch.evaluate_batch`); nothing below this package imports it.
"""

from __future__ import annotations

from typing import Protocol

from ope.evaluation.actions import ActionFiles
from ope.evaluation.batch import BatchContext, BatchPartials
from ope.evaluation.engines.local import LocalEngine, streaming_wanted
from ope.evaluation.engines.memory import MemoryEngine
from ope.evaluation.fit import Fitted, TrainingData
from ope.evaluation.plan import Plan
from policies import Policy

__all__ = ["ENGINES", "Engine", "LocalEngine", "MemoryEngine", "engine_for"]

ENGINES = ("memory", "local", "ray")


class Engine(Protocol):
    """Where a run's rows come from and where its batches are evaluated."""

    name: str

    def check(self, plan: Plan, policies: dict[str, Policy]) -> None:
        """Refuse, before any data is read, settings this engine cannot honour."""
        ...

    def load(self, plan: Plan, policies: dict[str, Policy], *, show_progress: bool = True) -> TrainingData:
        """Validate the log and return the rows to fit on (the whole log, or a sample) with the log's facts."""
        ...

    def evaluate(self, ctx: BatchContext, fitted: Fitted, data: TrainingData, actions: ActionFiles, *,
                 show_progress: bool = True) -> BatchPartials:
        """Evaluate every batch, writing the action files, and return the merged partial sums."""
        ...

    def streamed(self, plan: Plan) -> dict[str, object] | None:
        """How the log was read in batches (summary.json's ``streamed``), or None for the whole log at once."""
        ...


def engine_for(plan: Plan) -> Engine:
    """The engine ``[data] engine`` names; for "auto", ``memory`` unless ``[data] streaming`` is set or the log would not
    fit ``[data] memory_budget_mb`` (then ``local``)."""
    data = plan.config.data
    if data.engine == "ray":
        from ope.evaluation.engines.ray import RayEngine  # Ray is optional

        return RayEngine(data.ray_address)
    if data.engine == "memory":
        return MemoryEngine()
    return LocalEngine() if data.engine == "local" or streaming_wanted(plan) else MemoryEngine()
