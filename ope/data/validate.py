"""Validate request logs against the schema and the catalog (DESIGN §4).

Every problem names the column, the rule broken, how many rows and the first request_ids. Nothing is
coerced or dropped silently: with a quarantine file the bad rows are written aside, untouched, and
counted; without one, any problem stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from ope.data.catalog import Catalog
from ope.data.readers import is_multi_file, parse_timestamps, read_table, table_format
from ope.data.schema import DTYPE_KINDS, NEED_PREFIX, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, Status
from ope.errors import SchemaError
from ope.text import count as plural

__all__ = ["BatchCheck", "Problem", "ValidatedLogs", "check_batch", "load_logs", "problem_message", "raise_for_problems",
           "validate_logs"]

NULLABLE = {"propensity", "satisfaction", "sample_weight", "eligible_arms"}
SHOW_IDS = 5
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: where, what, how often, and the first request_ids affected."""

    column: str
    rule: str
    n_rows: int
    request_ids: tuple[str, ...] = ()
    fatal: bool = False

    def __str__(self) -> str:
        where = f" (first request_ids: {', '.join(self.request_ids)})" if self.request_ids else ""
        rows = "whole column" if self.fatal else plural(self.n_rows, "row")
        return f"{self.column}: {self.rule} — {rows}{where}"


@dataclass(frozen=True, slots=True)
class ValidatedLogs:
    """Typed, clean rows plus what was found wrong and set aside."""

    logs: pl.DataFrame
    problems: tuple[Problem, ...]
    n_input: int
    bad_rows: pl.DataFrame = field(repr=False)

    @property
    def n_quarantined(self) -> int:
        """Rows set aside."""
        return self.bad_rows.height

    def summary(self) -> dict[str, Any]:
        """What the log holds: rows, time span, models, arms, tasks, propensities, status mix."""
        logs = self.logs
        if logs.height == 0:
            return {"rows": 0, "quarantined": self.n_quarantined}
        shares = lambda c: {k: round(v / logs.height, 4) for k, v in logs[c].value_counts(sort=True).iter_rows()}  # noqa: E731
        return {
            "rows": logs.height,
            "quarantined": self.n_quarantined,
            "start": logs["ts"].min().isoformat(),  # type: ignore[union-attr]
            "end": logs["ts"].max().isoformat(),  # type: ignore[union-attr]
            "models": shares("model"),
            "arms": logs["arm"].n_unique(),
            "tasks": shares("task"),
            "with_propensity": round(logs["propensity"].is_not_null().mean() or 0.0, 4),  # type: ignore[arg-type]
            "with_satisfaction": round(logs["satisfaction"].is_not_null().mean() or 0.0, 4),  # type: ignore[arg-type]
            "status": shares("status"),
        }


class _Checker:
    """Accumulates typed columns and row problems for one raw frame."""

    def __init__(self, raw: pl.DataFrame) -> None:
        self.raw = raw
        self.ids = raw["request_id"].cast(pl.String) if "request_id" in raw.columns else pl.Series([str(i) for i in range(raw.height)])
        self.typed: dict[str, pl.Series] = {}
        self.problems: list[Problem] = []
        self.row_rules: list[tuple[str, str, Mask]] = []
        self.checked: list[tuple[str, str]] = []   # every rule applied, in order (to merge batches' tables)

    def fatal(self, column: str, rule: str) -> None:
        self.checked.append((column, rule))
        self.problems.append(Problem(column, rule, self.raw.height, fatal=True))

    def rows(self, column: str, rule: str, mask: Mask | pl.Series) -> None:
        self.checked.append((column, rule))
        m = mask.fill_null(False).to_numpy() if isinstance(mask, pl.Series) else mask
        if m.any():
            self.row_rules.append((column, rule, m))
            ids = tuple(self.ids.filter(pl.Series(m)).head(SHOW_IDS).fill_null("<null>").to_list())
            self.problems.append(Problem(column, rule, int(m.sum()), ids))

    def cast(self, column: str, kind: str) -> None:
        col = self.raw[column]
        out = _cast(col, kind)
        if out is None:
            self.fatal(column, f"wrong type: expected {kind}, got {col.dtype}")
            return
        if column not in NULLABLE and not column.startswith(NEED_PREFIX):
            self.rows(column, "missing value (null)", col.is_null())
        self.rows(column, f"not a valid {kind}", col.is_not_null() & out.is_null())
        self.typed[column] = out


def _cast(col: pl.Series, kind: str) -> pl.Series | None:
    """Cast to the schema kind without coercion; None when the stored type is wrong."""
    dtype = col.dtype
    if dtype == pl.Null:
        return col.cast({"str": pl.String, "int": pl.Int64, "float": pl.Float64, "datetime": pl.Datetime("us", "UTC"),
                         "list[str]": pl.List(pl.String)}[kind])
    if kind == "datetime":
        if isinstance(dtype, pl.Datetime):
            return col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return parse_timestamps(col) if dtype == pl.String else None
    if kind == "bool":
        if dtype == pl.Boolean:
            return col
        if dtype != pl.String:
            return None
        low = col.str.strip_chars().str.to_lowercase()
        return pl.select(pl.when(low.is_in(["true", "1"])).then(True).when(low.is_in(["false", "0"])).then(False)).to_series().alias(col.name)
    if kind == "list[str]":
        if isinstance(dtype, pl.List):
            return col.cast(pl.List(pl.String))
        return col.str.split(";").list.eval(pl.element().str.strip_chars()) if dtype == pl.String else None
    if dtype == pl.String and kind in ("int", "float"):
        text = col.str.strip_chars()
        return text.cast(pl.Int64 if kind == "int" else pl.Float64, strict=False)
    if dtype in DTYPE_KINDS[kind]:
        return col.cast({"str": pl.String, "int": pl.Int64, "float": pl.Float64}[kind])
    return None


def validate_logs(raw: pl.DataFrame, catalog: Catalog, *, source: str = "logs") -> ValidatedLogs:
    """Check every rule of DESIGN §4; return clean typed rows and the problems found."""
    if raw.height == 0:
        raise SchemaError(f"{source} is empty: it has no rows.")
    return _split(_check(raw, catalog), source)


@dataclass(frozen=True, slots=True)
class BatchCheck:
    """One batch of a streamed log, checked: its problems, every rule applied (in order), and,
    unless a whole column is wrong, its clean typed rows and its bad rows (with ``_problems``)."""

    problems: tuple[Problem, ...]
    checked: tuple[tuple[str, str], ...]
    logs: pl.DataFrame | None
    bad_rows: pl.DataFrame | None
    n_input: int

    @property
    def fatal(self) -> bool:
        """A whole column is missing or of the wrong type."""
        return any(p.fatal for p in self.problems)


def check_batch(raw: pl.DataFrame, catalog: Catalog, *, earlier_ids: pl.Series | None = None) -> BatchCheck:
    """The rules of `validate_logs` on one batch of a larger log (`ope.evaluation.engines.local`).

    Every rule is per row except duplicate request_ids: ``earlier_ids`` are ids already seen in
    earlier batches (only those that repeat somewhere need be passed), so a repeat is flagged
    whichever batch it falls in, exactly as on the whole log.
    """
    chk = _check(raw, catalog, earlier_ids=earlier_ids)
    if any(p.fatal for p in chk.problems):
        return BatchCheck(tuple(chk.problems), tuple(chk.checked), None, None, raw.height)
    split = _split(chk, "batch")
    return BatchCheck(split.problems, tuple(chk.checked), split.logs, split.bad_rows, raw.height)


def _check(raw: pl.DataFrame, catalog: Catalog, *, earlier_ids: pl.Series | None = None) -> _Checker:
    chk = _Checker(raw)
    for column in REQUIRED_COLUMNS:
        if column not in raw.columns:
            chk.fatal(column, "missing column")
    needs = {c: "bool" for c in raw.columns if c.startswith(NEED_PREFIX)}
    for column, kind in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS, **needs}.items():
        if column in raw.columns:
            chk.cast(column, kind)
    t = chk.typed
    for column in ("input_tokens", "output_tokens"):
        if column in t:
            chk.rows(column, "must be >= 0", t[column] < 0)
    for column in ("ttft_ms", "latency_ms", "cost_usd"):
        if column in t:
            chk.rows(column, "must be a finite number >= 0", ~t[column].is_finite() | (t[column] < 0))
    if "propensity" in t:
        p = t["propensity"]
        chk.rows("propensity", "must be in (0, 1] or null (got 0, > 1 or NaN)", p.is_not_null() & ~((p > 0) & (p <= 1)).fill_null(False))
    if "satisfaction" in t:
        s = t["satisfaction"]
        chk.rows("satisfaction", "must be in [0, 1] or null", s.is_not_null() & ~((s >= 0) & (s <= 1)).fill_null(False))
    if "sample_weight" in t:
        w = t["sample_weight"]
        chk.rows("sample_weight", "must be a finite number > 0 or null", w.is_not_null() & ~(w.is_finite() & (w > 0)).fill_null(False))
    if "status" in t:
        known = [s.value for s in Status]
        chk.rows("status", f"unknown status (known: {', '.join(known)})", t["status"].is_not_null() & ~t["status"].is_in(known))
    if "request_id" in t:
        ids = t["request_id"]
        repeat = ids.is_duplicated() & ~ids.is_first_distinct()
        if earlier_ids is not None and earlier_ids.len():
            repeat = repeat | ids.is_in(earlier_ids.cast(pl.String).implode())
        chk.rows("request_id", "duplicate request_id", ids.is_not_null() & repeat)
    if {"status", "output_tokens", "latency_ms", "ttft_ms"} <= t.keys():
        generating = (t["status"] == Status.OK) & (t["output_tokens"] > 0)
        chk.rows("latency_ms", "must exceed ttft_ms on ok rows with output tokens (throughput undefined)",
                 generating & (t["latency_ms"] <= t["ttft_ms"]))
    if "arm" in t:
        _check_arms(chk, catalog)
    return chk


def _check_arms(chk: _Checker, catalog: Catalog) -> None:
    t = chk.typed
    idx = catalog.arm_index(t["arm"])
    known = idx >= 0
    chk.rows("arm", "arm not in the catalog", t["arm"].is_not_null().to_numpy() & ~known)
    if "model" not in t:
        return
    wrong = known & (catalog.arm_models[np.where(known, idx, 0)] != catalog.model_codes(t["model"]))
    chk.rows("arm", "arm does not serve the requested model", wrong)
    if "input_tokens" in t:  # rows without input_tokens are reported as such, the others are checked
        frame = pl.DataFrame([s for s in t.values() if s.name in ("model", "input_tokens", "eligible_arms")] +
                             [s for s in t.values() if s.name.startswith(NEED_PREFIX)])
        ok = known & ~wrong & t["input_tokens"].is_not_null().to_numpy()
        frame = frame.with_columns(pl.col("input_tokens").fill_null(0))
        inelig = ok & ~catalog.eligible_for(frame, np.where(ok, idx, -1))
        chk.rows("arm", "logged arm is not eligible for the request (context too long, missing capability, or not in eligible_arms)", inelig)


def _split(chk: _Checker, source: str) -> ValidatedLogs:
    fatal = [p for p in chk.problems if p.fatal]
    if fatal:
        raise SchemaError(_message(source, chk.problems, chk.raw.height))
    bad = np.zeros(chk.raw.height, dtype=bool)
    for _, _, mask in chk.row_rules:
        bad |= mask
    logs = chk.raw.with_columns(list(chk.typed.values()))
    reasons = pl.Series("_problems", [""] * chk.raw.height)
    for column, rule, mask in chk.row_rules:
        reasons = pl.select(pl.when(pl.Series(mask)).then(reasons + f"{column}: {rule}; ").otherwise(reasons)).to_series()
    bad_rows = chk.raw.filter(pl.Series(bad)).with_columns(reasons.filter(pl.Series(bad)).str.strip_chars("; "))
    return ValidatedLogs(logs=logs.filter(pl.Series(~bad)), problems=tuple(chk.problems), n_input=chk.raw.height, bad_rows=bad_rows)


def _message(source: str, problems: list[Problem] | tuple[Problem, ...], n: int) -> str:
    lines = [f"{source}: {len(problems)} problem(s) in {n} rows:"] + [f"  - {p}" for p in problems]
    return "\n".join(lines)


problem_message = _message
NO_QUARANTINE_HINT = "\nFix these rows, or pass a quarantine file to set them aside and continue."


def raise_for_problems(source: str, problems: tuple[Problem, ...], n_input: int, quarantine: str | Path | None) -> None:
    """Stop as `load_logs` does: on a whole-column problem, or on any problem without a quarantine file."""
    if any(p.fatal for p in problems):
        raise SchemaError(_message(source, problems, n_input))
    if problems and quarantine is None:
        raise SchemaError(_message(source, problems, n_input) + NO_QUARANTINE_HINT)


def load_logs(path: str | Path, catalog: Catalog, *, quarantine: str | Path | None = None) -> ValidatedLogs:
    """Read and validate a log file; with ``quarantine`` bad rows go there and the rest continue.

    Raises `SchemaError` listing every problem when there is one and no quarantine file is given,
    or when a problem concerns a whole column (missing, wrong type). The input is never modified.
    """
    path = Path(path)
    if quarantine is not None:
        check_quarantine(Path(quarantine), path)
    raw = read_table(path)
    result = validate_logs(raw, catalog, source=str(path))
    if result.problems and quarantine is None:
        raise SchemaError(_message(str(path), result.problems, raw.height) + NO_QUARANTINE_HINT)
    if quarantine is not None and result.bad_rows.height:
        write_table(result.bad_rows, Path(quarantine))
    if result.logs.height == 0:
        raise SchemaError(f"{path}: no valid rows are left after setting aside {result.n_quarantined} bad rows.")
    return result


def check_quarantine(quarantine: Path, logs: Path) -> None:
    """Never overwrite the input or an existing file with set-aside rows, nor write them inside a logs folder."""
    if logs.is_dir() and quarantine.resolve().is_relative_to(logs.resolve()):
        raise SchemaError(f"The quarantine file {quarantine} is inside the logs folder {logs}; choose a path outside it.")
    if is_multi_file(logs) and not logs.is_dir() and quarantine.resolve().match(str(logs.resolve())):
        raise SchemaError(f"The quarantine file {quarantine} matches the logs pattern {logs}: a later run would read the "
                          "set-aside rows as logs; choose a path outside it.")
    if quarantine.exists() and quarantine.resolve() == logs.resolve():
        raise SchemaError(f"The quarantine file {quarantine} is the input log itself; choose another path.")
    if quarantine.exists():
        raise SchemaError(f"The quarantine file {quarantine} already exists; remove it or choose another path (nothing is overwritten).")
    table_format(quarantine)


def write_table(frame: pl.DataFrame, path: Path) -> None:
    """Write a frame in the format its extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = table_format(path)
    if fmt == "parquet":
        frame.write_parquet(path)
    elif fmt == "ndjson":
        frame.write_ndjson(path)
    else:
        nested = [c for c, d in frame.schema.items() if isinstance(d, (pl.List, pl.Struct))]
        frame.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join(";") for c in nested).write_csv(path)
