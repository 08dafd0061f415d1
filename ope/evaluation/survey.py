"""Pass 1 of a streamed run: validate every batch, sum the log's facts, and keep a training sample.

Each batch is validated as the whole log would be (`ope.data.batch_checks`: the same error table
and quarantine file); its valid rows add to the `DataFacts`, the log-wide vocabulary of categorical
columns and a uniform training sample of at most ``[data] max_train_rows`` rows, with their history
features when models will be fitted on it (`ope.models.sample`). With ``count_routing``, the
routing counts that tell a deterministic logger are kept over every row (`ope.data.overlap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ope.config import ExperimentConfig
from ope.data.batch_checks import ProblemTally, QuarantineWriter, checked_batches
from ope.data.catalog import Catalog
from ope.data.facts import DataFacts
from ope.data.overlap import RoutingCounts
from ope.data.source import LogSource
from ope.data.validate import raise_for_problems
from ope.errors import SchemaError
from ope.evaluation.batch import batch_dataset
from ope.evaluation.io_threads import prefetched
from ope.models.history import HistoryWindow
from ope.models.sample import TrainingSample, Vocabulary
from ope.progress import progress

__all__ = ["Survey", "survey"]


@dataclass
class Survey:
    """Pass 1's findings."""

    repeated: pl.Series
    vocab: Vocabulary
    sample: TrainingSample
    facts: DataFacts = field(default_factory=DataFacts)
    out_of_order: str | None = None
    batches: int = 0
    routing: RoutingCounts | None = None


def survey(source: LogSource, catalog: Catalog, cfg: ExperimentConfig, needs_history: bool, show_progress: bool, *,
           count_routing: bool = False) -> Survey:
    """Pass 1 over ``source`` (module docstring); raises the log's problem table as the in-memory run does."""
    data = cfg.data
    found = Survey(source.repeated_ids(), Vocabulary(), TrainingSample(data.max_train_rows),
                   routing=RoutingCounts() if count_routing else None)
    tally = ProblemTally()
    writer = None if data.quarantine is None else QuarantineWriter(Path(data.quarantine))
    window = HistoryWindow(catalog.n_arms, cfg.predictors.history_hours) if needs_history else None
    last = None
    with progress("validating and sampling logs", total=math.ceil(source.n_rows / data.batch_rows), enabled=show_progress) as bar:
        for check in prefetched(checked_batches(source, catalog, data.batch_rows, found.repeated)):
            bar.update(1)
            found.batches += 1
            tally.add(check)
            if tally.has_fatal or check.logs is None or check.bad_rows is None:
                continue
            if writer is not None:
                writer.write(check.bad_rows)
            found.facts.quarantined += check.bad_rows.height
            if check.logs.height == 0:
                continue
            ds = batch_dataset(check.logs, catalog, cfg.evaluation.sla_latency_ms)
            last = _check_order(found, ds.logs, last)
            found.vocab.add(ds.logs)
            history = window(ds) if window is not None and found.out_of_order is None else None
            found.sample.offer(ds, found.facts.rows, history)
            if found.routing is not None:
                found.routing.add(ds.logs, ds.eligible)
            found.facts.add(ds)
    if writer is not None:
        writer.close()
    raise_for_problems(source.label, tally.problems(), tally.n_input, data.quarantine)
    if found.facts.rows == 0:
        raise SchemaError(f"{source.label}: no valid rows are left after setting aside {found.facts.quarantined} bad rows.")
    return found


def _check_order(found: Survey, logs: pl.DataFrame, last: int | None) -> int:
    """Note the first row that comes before the row read just ahead of it; return the batch's last ts (µs)."""
    ts = logs["ts"].dt.epoch("us").to_numpy()
    earlier = np.concatenate([[ts[0] if last is None else last], ts[:-1]])
    if found.out_of_order is None and (ts < earlier).any():
        row = int(np.flatnonzero(ts < earlier)[0])
        found.out_of_order = (f"request_id {logs['request_id'][row]} at {logs['ts'][row]} comes after a request "
                              f"{(earlier[row] - ts[row]) / 1e6:g} s later")
    return int(ts[-1])
