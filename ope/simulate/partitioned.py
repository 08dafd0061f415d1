"""A simulated log too large for memory: written as time-ordered parquet partitions, one at a time.

The window is cut into consecutive time spans holding ``partition_rows`` requests each (the last
one the remainder), placed so that each span's share of rows is its share of the arrival density
(``arrival_floor + load``). Partition b is `simulate`'s recipe on its own span, from its own seed
``SeedSequence(seed, spawn_key=(b,))``: its contexts, the `World` that knows their exact
expected outcomes, the logged arms and the outcomes. Any partition's world can be rebuilt from
(seed, b), so the exact truth of any policy stays available without holding the log
(`PartitionedSimulation.true_value`). Memory holds one partition; the rows of the log are only
limited by disk.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.errors import ConfigError
from ope.simulate.clock import US_PER_DAY, load_at, to_us
from ope.simulate.contexts import sample_contexts
from ope.simulate.endpoints import arm_table, catalog_frame
from ope.simulate.generate import SimulatedLog, _check_arguments, draw_logged_arms, log_frame
from ope.simulate.scenarios import scenario_spec
from ope.simulate.world import World

__all__ = ["PartitionedSimulation", "write_partitioned", "MANIFEST", "PARTITION_ROWS"]

#: rows per partition by default (≈ 0.6 GB peak while one is generated)
PARTITION_ROWS = 250_000
MANIFEST = "simulation.json"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_GRID_US = 60_000_000  # the arrival density is integrated minute by minute


@dataclass(frozen=True, slots=True)
class Part:
    """One partition: its rows, the index of its first row in the log, its time span [start, end)."""

    rows: int
    first_row: int
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class PartitionedSimulation:
    """The plan of a partitioned log of a named world (`ope.simulate.scenarios`); `partition` rebuilds any part with its truth."""

    rows: int
    days: float
    seed: int
    partition_rows: int
    parts: tuple[Part, ...]
    scenario: str = "default"

    @classmethod
    def plan(cls, rows: int, days: float = 7, seed: int = 0, *, partition_rows: int = PARTITION_ROWS,
             scenario: str = "default") -> PartitionedSimulation:
        """Cut the window into time spans of ``partition_rows`` expected arrivals each."""
        _check_arguments(rows, days, seed)
        if isinstance(partition_rows, bool) or not isinstance(partition_rows, int) or partition_rows < 1:
            raise ConfigError(f"The 'partition_rows' parameter must be an int >= 1. Got {partition_rows!r} instead.")
        spec = scenario_spec(scenario)
        start_us = to_us(spec.start)
        window_us = round(days * US_PER_DAY)
        edges = np.append(np.arange(start_us, start_us + window_us, _GRID_US, dtype=np.int64), start_us + window_us)
        density = spec.arrival_floor + load_at((edges[:-1] + edges[1:]) // 2, spec.peak_hour)
        cdf = np.concatenate([[0.0], np.cumsum(density * np.diff(edges))])
        firsts = np.arange(0, rows, partition_rows, dtype=np.int64)
        bounds = np.rint(np.interp(np.append(firsts, rows) / rows * cdf[-1], cdf, edges)).astype(np.int64)
        bounds[0], bounds[-1] = start_us, start_us + window_us
        counts = np.diff(np.append(firsts, rows))
        parts = tuple(Part(int(n), int(f), int(a), int(b)) for n, f, a, b in zip(counts, firsts, bounds[:-1], bounds[1:], strict=True))
        return cls(int(rows), float(days), int(seed), int(partition_rows), parts, scenario)

    @classmethod
    def load(cls, out_dir: str | Path) -> PartitionedSimulation:
        """The plan written by `write_partitioned`."""
        data = json.loads((Path(out_dir) / MANIFEST).read_text())
        parts = tuple(Part(p["rows"], p["first_row"], p["start_us"], p["end_us"]) for p in data["parts"])
        return cls(data["rows"], data["days"], data["seed"], data["partition_rows"], parts, data.get("scenario", "default"))

    def partition(self, b: int) -> SimulatedLog:
        """Partition ``b``: its log (request ids numbered across the whole log), catalog and world."""
        part, spec = self.parts[b], scenario_spec(self.scenario)
        context_rng, arm_rng, outcome_rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(b,))).spawn(3)
        span = dataclasses.replace(spec, start=_EPOCH + dt.timedelta(microseconds=part.start_us))
        contexts = sample_contexts(span, arm_table(spec), part.rows, (part.end_us - part.start_us) / US_PER_DAY, context_rng)
        world = World(spec, contexts, days=self.days)
        arms = draw_logged_arms(world.logging_probabilities, arm_rng)
        logs = log_frame(world, arms, world.draw_outcomes(arms, outcome_rng), self.seed)
        digits = max(7, len(str(self.rows - 1)))
        ids = pl.concat_str(pl.lit(f"s{self.seed}-"), (pl.int_range(pl.len()) + part.first_row).cast(pl.String).str.zfill(digits))
        return SimulatedLog(logs=logs.with_columns(ids.alias("request_id")), catalog=catalog_frame(spec, world.table, world.schedule),
                            world=world)

    def __iter__(self) -> Iterator[SimulatedLog]:
        return (self.partition(b) for b in range(len(self.parts)))

    def true_value(self, policy: Callable[[SimulatedLog], npt.NDArray[np.float64]], sla_latency_ms: float) -> dict[str, float]:
        """Exact sample-weighted mean of every metric over the whole log under ``policy`` (a partition → its (n, K) π)."""
        total: dict[str, float] = {}
        weight = 0.0
        for sim in self:
            w = float(sim.world.sample_weight.sum())
            for metric, value in sim.world.true_value(policy(sim), sla_latency_ms).items():
                total[metric] = total.get(metric, 0.0) + value * w
            weight += w
        return {m: v / weight for m, v in total.items()}

    def to_dict(self) -> dict[str, object]:
        """The manifest."""
        return {"rows": self.rows, "days": self.days, "seed": self.seed, "partition_rows": self.partition_rows,
                "scenario": self.scenario, "parts": [dataclasses.asdict(p) for p in self.parts]}


def write_partitioned(out_dir: str | Path, *, rows: int, days: float, seed: int, partition_rows: int = PARTITION_ROWS,
                      logs_name: str = "requests", scenario: str = "default") -> tuple[Path, Path]:
    """Write ``out_dir/<logs_name>/part-#####.parquet`` one partition at a time, ``out_dir/catalog.csv`` and the
    manifest ``out_dir/simulation.json``; return the logs folder and the catalog path."""
    plan = PartitionedSimulation.plan(rows, days, seed, partition_rows=partition_rows, scenario=scenario)
    out = Path(out_dir)
    logs_dir = out / logs_name
    logs_dir.mkdir(parents=True, exist_ok=True)
    width = max(5, math.ceil(math.log10(len(plan.parts) + 1)))
    catalog_path = out / "catalog.csv"
    for b, sim in enumerate(plan):
        sim.logs.write_parquet(logs_dir / f"part-{b:0{width}d}.parquet", compression="zstd", statistics=True)
        if b == 0:
            sim.catalog.write_csv(catalog_path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
        del sim
    (out / MANIFEST).write_text(json.dumps(plan.to_dict(), indent=1))
    return logs_dir, catalog_path
