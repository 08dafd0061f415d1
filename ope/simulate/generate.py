"""Generating a simulated request log: contexts, logged arms, outcomes, and the catalog beside it.

The log is reproducible bit for bit from the seed: ``np.random.default_rng(seed)`` is split into
three independent streams (contexts, logged arms, outcomes) and nothing reads the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.errors import ConfigError
from ope.simulate.contexts import sample_contexts
from ope.simulate.defaults import default_spec
from ope.simulate.endpoints import arm_table, catalog_frame
from ope.simulate.outcomes import Outcomes
from ope.simulate.spec import WorldSpec
from ope.simulate.world import World

__all__ = ["SimulatedLog", "draw_logged_arms", "log_frame", "simulate", "write_simulation"]


@dataclass(frozen=True, slots=True, eq=False)
class SimulatedLog:
    """A generated log, its catalog and the world that knows the truth about it.

    ``logs`` has the columns of ``ope.data.schema.REQUIRED_COLUMNS`` plus ``sample_weight`` and the
    context columns ``tenant``, ``needs_tools`` and ``needs_json``; row i is ``world`` row i.
    """

    logs: pl.DataFrame
    catalog: pl.DataFrame
    world: World


def _check_arguments(rows: object, days: object, seed: object) -> None:
    """Reject arguments that would not give a meaningful log, with a message naming them."""
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
        msg = f"The 'rows' parameter of simulate must be an int >= 1. Got {rows!r} instead."
        raise ConfigError(msg)
    if isinstance(days, bool) or not isinstance(days, int | float | np.number) or not 0 < days < 3650:
        msg = f"The 'days' parameter of simulate must be a number in (0, 3650). Got {days!r} instead."
        raise ConfigError(msg)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        msg = f"The 'seed' parameter of simulate must be an int >= 0. Got {seed!r} instead."
        raise ConfigError(msg)


def draw_logged_arms(probs: npt.NDArray[np.float64], rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """One arm per row from the (n, K) logging probabilities (only arms with positive probability)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    return np.argmax(cdf > u[:, None], axis=1).astype(np.int64)


def log_frame(world: World, arm_index: npt.NDArray[np.int64], outcomes: Outcomes, seed: int) -> pl.DataFrame:
    """Assemble the request log (DESIGN §4) from the world's contexts, logged arms and outcomes."""
    ctx, spec = world.contexts, world.spec
    n = ctx.n
    tasks = np.array([t.name for t in spec.tasks])
    models = np.array([m.name for m in spec.models])
    tenants = np.array([t.name for t in spec.tenants])
    frame = pl.DataFrame(
        {
            "ts": pl.Series(ctx.ts_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "model": models[ctx.model],
            "task": tasks[ctx.task],
            "input_tokens": pl.Series(ctx.input_tokens, dtype=pl.Int64),
            "arm": np.array(world.arms)[arm_index],
            "propensity": world.logging_probabilities[np.arange(n), arm_index],
            "status": outcomes.status_names,
            "output_tokens": pl.Series(outcomes.output_tokens, dtype=pl.Int64),
            "ttft_ms": outcomes.ttft_ms,
            "latency_ms": outcomes.latency_ms,
            "cost_usd": outcomes.cost_usd,
            "satisfaction": pl.Series(outcomes.satisfaction, dtype=pl.Float64, nan_to_null=True),
            "sample_weight": ctx.sample_weight,
            "tenant": tenants[ctx.tenant],
            "needs_tools": ctx.needs_tools,
            "needs_json": ctx.needs_json,
        }
    )
    request_id = pl.concat_str(pl.lit(f"s{seed}-"), pl.int_range(pl.len()).cast(pl.String).str.zfill(7))
    return frame.select(request_id.alias("request_id"), pl.all())


def simulate(rows: int = 60_000, days: float = 7, seed: int = 0, *, spec: WorldSpec | None = None) -> SimulatedLog:
    """Generate ``rows`` logged requests over ``days`` days from 2025-10-01 00:00 UTC.

    Parameters
    ----------
    rows
        Number of logged requests (the log is a tenant-stratified sample of full traffic).
    days
        Length of the window; price changes and incidents sit at fixed fractions of it.
    seed
        Seed of ``np.random.default_rng``; the same seed gives the same log bit for bit.
    spec
        The world; ``defaults.default_spec()`` when omitted.

    Examples
    --------
    >>> sim = simulate(rows=2_000, days=1, seed=0)
    >>> sim.world.logging_probabilities.shape == (2_000, len(sim.world.arms))
    True
    """
    _check_arguments(rows, days, seed)
    spec = default_spec() if spec is None else spec
    context_rng, arm_rng, outcome_rng = np.random.default_rng(seed).spawn(3)
    world = World(spec, sample_contexts(spec, arm_table(spec), int(rows), float(days), context_rng), days=days)
    arm_index = draw_logged_arms(world.logging_probabilities, arm_rng)
    outcomes = world.draw_outcomes(arm_index, outcome_rng)
    logs = log_frame(world, arm_index, outcomes, int(seed))
    return SimulatedLog(logs=logs, catalog=catalog_frame(spec, world.table, world.schedule), world=world)


def write_simulation(
    out_dir: str | Path, *, rows: int, days: float, seed: int, logs_name: str = "requests.parquet"
) -> tuple[Path, Path]:
    """Simulate and write ``out_dir/<logs_name>`` (parquet, zstd) and ``out_dir/catalog.csv``.

    ``valid_from`` is written as ISO 8601 with a ``Z`` so ``pl.read_csv(try_parse_dates=True)``
    reads it back as a UTC datetime. Returns the two paths.
    """
    sim = simulate(rows, days, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logs_path = out / logs_name
    catalog_path = out / "catalog.csv"
    sim.logs.write_parquet(logs_path, compression="zstd", compression_level=19, statistics=True)
    sim.catalog.write_csv(catalog_path, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    return logs_path, catalog_path
