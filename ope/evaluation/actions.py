"""Action files: ``request_id, arm, probability`` of every non-zero action probability a run evaluated, one parquet
file per policy, written batch by batch into a temporary folder and moved into the run folder at the end."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from estimators import SparseTarget

__all__ = ["ACTION_SCHEMA", "ActionFiles", "action_table", "action_tables", "action_writer", "action_writers", "file_stems"]

ACTION_SCHEMA = pa.schema([("request_id", pa.large_string()), ("arm", pa.large_string()), ("probability", pa.float64())])


def action_writer(path: Path) -> pq.ParquetWriter:
    """A parquet writer of action tables (request_ids are unique: dictionary-encoding only ``arm`` halves write time)."""
    return pq.ParquetWriter(path, ACTION_SCHEMA, use_dictionary=["arm"])


@contextmanager
def action_writers(paths: dict[str, Path]) -> Iterator[dict[str, pq.ParquetWriter]]:
    """An open `action_writer` per policy, all closed however the block ends."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(action_writer(path)) for name, path in paths.items()}


def action_table(request_ids: pl.Series, arms: tuple[str, ...], pi: npt.NDArray[np.float64] | SparseTarget) -> pa.Table:
    """``request_id, arm, probability`` of every non-zero action probability, row by row."""
    return action_tables(request_ids, arms, {"": pi if isinstance(pi, SparseTarget) else SparseTarget.of(pi)})[""]


def action_tables(request_ids: pl.Series, arms: tuple[str, ...], probabilities: dict[str, SparseTarget]) -> dict[str, pa.Table]:
    """`action_table` of several policies on the same rows (request ids converted once)."""
    ids = request_ids.cast(pl.String).to_arrow().cast(pa.large_string())
    names = pa.array(arms, type=pa.large_string())
    out = {}
    for name, sp in probabilities.items():
        keep = sp.values != 0
        rows, cols = pa.array(sp.rows[keep]), pa.array(sp.arms[keep])
        out[name] = pa.table([ids.take(rows), names.take(cols), pa.array(sp.values[keep], type=pa.float64())], schema=ACTION_SCHEMA)
    return out


def file_stems(names: list[str]) -> dict[str, str]:
    """A distinct, filesystem-safe file name for every policy's actions."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        clean = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or f"policy{i}"
        stem, k = clean, 2
        while stem in out.values():
            stem, k = f"{clean}-{k}", k + 1
        out[name] = stem
    return out


class ActionFiles:
    """Each policy's action file in a temporary folder of its own, removed with this object unless moved out first."""

    def __init__(self, names: list[str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ope-actions-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.paths = {name: self.folder / f"{stem}.parquet" for name, stem in file_stems(names).items()}

    def read(self, name: str) -> pl.DataFrame:
        """The action file of policy ``name``."""
        return pl.read_parquet(self.paths[name])

    def move_to(self, folder: Path) -> dict[str, Path]:
        """Move every file into ``folder`` (same file names) and remove the temporary folder."""
        folder.mkdir(parents=True, exist_ok=True)
        moved = {}
        for name, path in self.paths.items():
            moved[name] = Path(shutil.move(path, folder / path.name))
        self.paths = moved
        self.discard()
        return moved

    def discard(self) -> None:
        """Remove the temporary folder now (e.g. a run that failed midway)."""
        self._cleanup()
