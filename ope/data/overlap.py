"""Detecting a deterministic logging router from the log itself.

Importance weighting needs every arm a target policy may choose to have been *possible* under
the logging policy. A latency-, cost- or ``sort``/``order``-based router serves one arm per
context, so other arms were never possible and IPS-type numbers are meaningless. The signature is
visible in the data: among requests with the same routing context (model, task, eligible set,
time bucket), one arm is served (nearly) always although several were eligible.

Examples
--------
>>> import polars as pl
>>> from datetime import datetime, UTC
>>> hours = [datetime(2025, 1, 1, h, tzinfo=UTC) for h in (0, 1)]      # a/m all of hour 0, b/m all of hour 1
>>> logs = pl.DataFrame({"model": ["m"] * 60, "task": ["chat"] * 60, "arm": ["a/m"] * 30 + ["b/m"] * 30,
...                      "ts": [hours[0]] * 30 + [hours[1]] * 30})
>>> detect_deterministic_router(logs).deterministic
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["NO_OVERLAP", "OverlapFinding", "RoutingCounts", "detect_deterministic_router"]

NO_OVERLAP = "no overlap: only model-based estimates possible"


@dataclass(frozen=True, slots=True, kw_only=True)
class OverlapFinding:
    """Whether the log looks deterministically routed, with the evidence.

    ``share_single_arm`` is the share of checked rows whose routing-context group served one arm in
    at least ``threshold`` of its requests; a group is checked when it has at least ``min_rows``
    requests and two or more candidate arms.
    """

    deterministic: bool
    share_single_arm: float
    rows_checked: int
    groups_checked: int
    groups_single_arm: int
    examples: tuple[dict[str, Any], ...]
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for reports."""
        return {"deterministic": self.deterministic, "share_single_arm": round(self.share_single_arm, 4),
                "rows_checked": self.rows_checked, "groups_checked": self.groups_checked,
                "groups_single_arm": self.groups_single_arm, "examples": list(self.examples), "message": self.message}


def _candidates(logs: pl.DataFrame, eligible: npt.NDArray[np.bool_] | None) -> tuple[pl.Series, pl.Series]:
    """Per row: a signature of its candidate set and the number of candidates."""
    if eligible is not None:
        bits = np.random.default_rng(0).integers(1, 2**62, size=eligible.shape[1], dtype=np.int64)
        signature = (eligible.astype(np.int64) * bits[None, :]).sum(axis=1)
        return pl.Series("_cand", signature), pl.Series("_n_cand", eligible.sum(axis=1))
    per_model = logs.group_by("model").agg(pl.col("arm").n_unique().alias("_n_cand"))
    n_cand = logs.select("model").join(per_model, on="model", how="left", maintain_order="left")["_n_cand"]
    return pl.Series("_cand", np.zeros(logs.height, dtype=np.int64)), n_cand


def detect_deterministic_router(
    logs: pl.DataFrame,
    eligible: npt.NDArray[np.bool_] | None = None,
    *,
    by: tuple[str, ...] = ("model", "task"),
    time_bucket: str | None = "1h",
    threshold: float = 0.99,
    min_rows: int = 20,
    min_share: float = 0.8,
) -> OverlapFinding:
    """Look for one served arm per routing context in a request log (DESIGN §4 columns).

    Parameters
    ----------
    logs
        The log; needs ``arm`` and the ``by`` columns present, and ``ts`` when ``time_bucket`` is set.
    eligible
        (n, K) candidate arms per row (``Catalog.eligible``); without it, the candidates of a row
        are every arm the log shows for its model.
    by, time_bucket
        The routing context: equal values (and the same candidate set) form a group.
    threshold, min_rows
        A group of at least ``min_rows`` requests is single-arm when its commonest arm has a share
        of at least ``threshold``.
    min_share
        The router is reported deterministic when single-arm groups hold at least this share of
        the checked rows.
    """
    counts = RoutingCounts(by=by, time_bucket=time_bucket)
    counts.add(logs, eligible)
    return counts.finding(threshold=threshold, min_rows=min_rows, min_share=min_share)


class RoutingCounts:
    """Requests per routing context (``by`` columns, time bucket, candidate set) and served arm.

    The evidence `detect_deterministic_router` weighs, as sums that add up over batches of a log
    (`ope.evaluation.engines.local`): the finding of the merged counts is the whole log's.
    """

    def __init__(self, *, by: tuple[str, ...] = ("model", "task"), time_bucket: str | None = "1h") -> None:
        self.by, self.time_bucket = by, time_bucket
        self.keys: list[str] = []
        self.parts: list[pl.DataFrame] = []
        self.compacted = 0

    def add(self, logs: pl.DataFrame, eligible: npt.NDArray[np.bool_] | None = None) -> None:
        """Count a batch (without ``eligible``, the candidates are every arm the batch shows for a model: use it on whole logs only)."""
        keys = [c for c in self.by if c in logs.columns]
        frame = logs.select([*keys, "arm"]).with_columns(*_candidates(logs, eligible))
        if self.time_bucket is not None and "ts" in logs.columns:
            frame = frame.with_columns(logs["ts"].dt.truncate(self.time_bucket).alias("_bucket"))
            keys.append("_bucket")
        self.keys = keys
        self.parts.append(frame.group_by([*keys, "_cand", "arm"]).agg(pl.len().alias("_count"), pl.first("_n_cand")))
        if sum(p.height for p in self.parts) > 4 * max(self.compacted, 100_000):
            self._compact()

    def _compact(self) -> pl.DataFrame:
        merged = pl.concat(self.parts).group_by([*self.keys, "_cand", "arm"]).agg(pl.col("_count").sum(), pl.first("_n_cand"))
        self.parts, self.compacted = [merged], merged.height
        return merged

    def finding(self, *, threshold: float = 0.99, min_rows: int = 20, min_share: float = 0.8) -> OverlapFinding:
        """The finding of every batch counted so far (see `detect_deterministic_router`)."""
        keys = self.keys
        group_keys = [*keys, "_cand"]
        counts = self._compact()
        groups = counts.group_by(group_keys).agg(
            pl.col("_count").sum().alias("rows"), pl.col("_count").max().alias("top"),
            pl.col("arm").sort_by(["_count", "arm"], descending=[True, False]).first().alias("top_arm"),
            pl.col("arm").n_unique().alias("arms_served"), pl.first("_n_cand").alias("candidates"),
        )
        checked = groups.filter((pl.col("rows") >= min_rows) & (pl.col("candidates") >= 2))
        single = checked.filter(pl.col("top") >= threshold * pl.col("rows"))
        rows_checked = int(checked["rows"].sum()) if checked.height else 0
        share = float(single["rows"].sum()) / rows_checked if rows_checked else 0.0
        deterministic = rows_checked > 0 and share >= min_share
        examples = tuple(
            {"group": {k: str(r[k]) for k in keys}, "arm": r["top_arm"], "share": round(r["top"] / r["rows"], 4),
             "rows": r["rows"], "candidates": r["candidates"]}
            for r in single.sort(["rows", *keys], descending=[True, *[False] * len(keys)]).head(3).iter_rows(named=True)
        )
        if rows_checked == 0:
            message = (f"overlap not checked: no routing context has {min_rows}+ requests and 2+ candidate arms; "
                       "nothing shows the logging router was randomised.")
        elif deterministic:
            message = (f"{NO_OVERLAP}. The logging router looks deterministic: in {share:.0%} of {rows_checked} checked "
                       f"requests, the routing context ({', '.join(keys + ['candidate set'])}) was served by a single arm "
                       f"in >= {threshold:.0%} of cases although several were eligible. IPS-type estimates are not valid.")
        else:
            message = (f"overlap present: only {share:.0%} of {rows_checked} checked requests fall in single-arm routing "
                       "contexts, so the logging router spread traffic over several arms.")
        return OverlapFinding(deterministic=deterministic, share_single_arm=share, rows_checked=rows_checked,
                              groups_checked=checked.height, groups_single_arm=single.height, examples=examples,
                              message=message)
