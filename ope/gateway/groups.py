"""Fixed weights per request group, averaged from a policy's action probabilities on the logged requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from policies.exported import ANY, GroupWeights, bucket_labels, group_keys

__all__ = ["DIGITS", "group_average", "weights_document"]

#: weights are written (and the exported policy built) with this many decimals: what the file says is what is evaluated
DIGITS = 6


def group_average(requests: pl.DataFrame, sample_weight: npt.NDArray[np.float64], actions: pl.DataFrame,
                  length_edges: Sequence[int] = ()) -> dict[str, dict[str, float]]:
    """Each group's mean action probability per arm, weighted by the rows' sample weights.

    ``requests`` (``request_id, model, task, input_tokens``) are the logged requests, ``actions``
    (``request_id, arm, probability``) the policy's non-zero probabilities on them; groups are
    `policies.exported.group_keys`, plus each model's default group ``<model>|*`` over all its requests.
    Weights are rounded to `DIGITS` decimals; zeros are left out.
    """
    rows = requests.select("request_id", "model", "task", "input_tokens").with_columns(
        group_keys(requests, length_edges), pl.concat_str([pl.col("model"), pl.lit(f"|{ANY}")]).alias("default"),
        pl.Series("_w", sample_weight, dtype=pl.Float64))
    rows = rows.join(actions.select("request_id").unique(), on="request_id", how="semi")
    joined = actions.join(rows, on="request_id", how="inner")
    out: dict[str, dict[str, float]] = {}
    for column in ("group", "default"):
        total = rows.group_by(column).agg(pl.col("_w").sum().alias("_total"))
        mass = joined.group_by(column, "arm").agg((pl.col("probability") * pl.col("_w")).sum().alias("_mass"))
        table = mass.join(total, on=column).with_columns((pl.col("_mass") / pl.col("_total")).round(DIGITS).alias("weight"))
        for key, arm, weight in table.sort(column, "arm").select(column, "arm", "weight").iter_rows():
            if weight > 0:
                out.setdefault(key, {})[arm] = weight
    return dict(sorted(out.items()))


def weights_document(policy: GroupWeights) -> dict[str, Any]:
    """The ``json`` export: weights per (model, task, input-length bucket), with the rule that reads them."""
    labels = bucket_labels(policy.length_edges) if policy.length_edges else []
    groups = []
    for key, weights in policy.weights.items():
        parts = key.split("|")
        entry: dict[str, Any] = {"model": parts[0], "task": parts[1]}
        if len(parts) > 2:
            entry["input_tokens"] = parts[2]
        groups.append(entry | {"weights": weights})
    return {
        "format": "llm-ope-group-weights", "version": 1,
        "rule": "pick an arm with probability proportional to its weight among the arms eligible for the request "
                "(context fits, capabilities supported); a request whose (model, task, input_tokens) group is not listed "
                "uses its model's task '*' group; with no eligible weighted arm, uniform over the eligible arms",
        "input_token_buckets": labels, "groups": groups,
    }
