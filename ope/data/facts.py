"""What a run read, as the report states it: rows, span, models, feedback, missing propensities — summed batch by
batch, so a log read whole and one read in batches give the same facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS

__all__ = ["DISTRIBUTION_METRICS", "DataFacts"]

#: metrics whose whole distribution a run estimates (on a grid spanning each one's range in the log)
DISTRIBUTION_METRICS = ("ttft_ms", "latency_ms", "cost_usd", "throughput_tps")


@dataclass
class DataFacts:
    """Facts of the valid rows of a log, added one batch at a time (`add`)."""

    rows: int = 0
    quarantined: int = 0
    with_satisfaction: int = 0        # rows the satisfaction metric covers: feedback, or a failure counted 0
    with_feedback: int = 0            # rows carrying satisfaction feedback in the log
    feedback: bool = False
    missing_propensity: int = 0
    start: datetime | None = None
    end: datetime | None = None
    models: dict[str, int] = field(default_factory=dict)
    arms: tuple[str, ...] = ()
    ranges: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # metric → (smallest > 0, largest, any 0)

    @classmethod
    def of(cls, dataset: BanditDataset) -> DataFacts:
        """The facts of a whole log held in memory."""
        facts = cls(quarantined=dataset.n_quarantined)
        facts.add(dataset)
        return facts

    def add(self, ds: BanditDataset) -> None:
        """Add one batch of valid rows."""
        self.arms = ds.arms
        self.rows += ds.n
        self.with_satisfaction += int((~np.isnan(ds.outcomes[:, METRICS.index("satisfaction")])).sum())
        if "satisfaction" in ds.logs.columns:
            self.with_feedback += ds.logs.height - ds.logs["satisfaction"].null_count()
        self.feedback = self.feedback or ds.has_satisfaction_feedback()
        self.missing_propensity += int(np.isnan(ds.propensities).sum())
        lo, hi = ds.logs["ts"].min(), ds.logs["ts"].max()
        self.start = lo if self.start is None else min(self.start, lo)  # type: ignore[type-var,assignment]
        self.end = hi if self.end is None else max(self.end, hi)  # type: ignore[type-var,assignment]
        self._add_ranges(ds)
        for model, count in ds.logs["model"].value_counts().iter_rows():
            self.models[model] = self.models.get(model, 0) + count

    def _add_ranges(self, ds: BanditDataset) -> None:
        """Widen each distribution metric's range by the batch's values."""
        for metric in DISTRIBUTION_METRICS:
            y = ds.outcomes[:, METRICS.index(metric)]
            positive = y[y > 0]
            low, high, zero = self.ranges.get(metric, (np.inf, 0.0, False))
            if positive.size:
                low, high = min(low, float(positive.min())), max(high, float(positive.max()))
            self.ranges[metric] = (low, high, zero or bool((y <= 0).any()))

    def to_dict(self) -> dict[str, Any]:
        """The ``data`` facts of summary.json."""
        assert self.start is not None and self.end is not None
        return {"rows": self.rows, "quarantined_rows": self.quarantined, "rows_with_satisfaction": self.with_satisfaction,
                "rows_with_feedback": self.with_feedback,
                "start": self.start.isoformat(), "end": self.end.isoformat(), "arms": list(self.arms),
                "models": [{"model": m, "count": c} for m, c in sorted(self.models.items(), key=lambda mc: (-mc[1], mc[0]))]}
