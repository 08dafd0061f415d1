"""The in-memory engine: the whole log is read, validated and fitted on at once, and evaluated as one batch."""

from __future__ import annotations

import warnings

from estimators import SupportWarning
from ope.data.dataset import BanditDataset
from ope.data.facts import DataFacts
from ope.data.overlap import detect_deterministic_router
from ope.evaluation.actions import ActionFiles, action_writers
from ope.evaluation.batch import BatchContext, BatchPartials, evaluate_batch
from ope.evaluation.fit import Fitted, TrainingData
from ope.evaluation.plan import Plan
from ope.progress import progress
from policies import Policy

__all__ = ["MemoryEngine"]


class MemoryEngine:
    """One batch: the whole log. Online routers are rolled out on it in arrival order, and can be replayed."""

    name = "memory"

    def check(self, plan: Plan, policies: dict[str, Policy]) -> None:
        """Every setting and policy works in memory."""

    def load(self, plan: Plan, policies: dict[str, Policy], *, show_progress: bool = True) -> TrainingData:
        """The validated log (bad rows set aside when a quarantine file is given), its facts, and the
        deterministic-logger check on it."""
        cfg = plan.config
        with progress("loading and validating logs", total=1, enabled=show_progress) as bar:
            dataset = BanditDataset.load(cfg.data.logs, cfg.data.catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms,
                                         quarantine=cfg.data.quarantine)
            bar.update(1)
        return TrainingData(dataset, DataFacts.of(dataset), lambda: detect_deterministic_router(dataset.logs, dataset.eligible),
                            whole_log=True)

    def evaluate(self, ctx: BatchContext, fitted: Fitted, data: TrainingData, actions: ActionFiles, *,
                 show_progress: bool = True) -> BatchPartials:
        """`evaluate_batch` on the whole log, with the fit's own out-of-fold q̂ and propensities."""
        total = ctx.empty()
        with warnings.catch_warnings(), action_writers(actions.paths) as writers, \
                progress("evaluating policies", total=2 * len(ctx.policies), enabled=show_progress) as bar:
            warnings.simplefilter("ignore", SupportWarning)  # kept in the diagnostics and the report

            def step(name: str) -> None:
                bar.set_postfix_str(name, refresh=False)
                bar.update(1)

            for name, table in evaluate_batch(ctx, fitted.whole_log(data), total, step).items():
                writers[name].write_table(table)
        return total

    def streamed(self, plan: Plan) -> None:
        """Not streamed."""
        return None
