"""What a policy reads of the requests it routes: the `RoutingContext`, not the whole log.

A `ope.data.dataset.BanditDataset` is one; so is anything else with these members (a notebook's own
arrays, a gateway's request batch). Routing needs eligibility, the arms and their attributes, the
prices in force and a few request columns; heuristics that learn (cheapest, fastest) also read the
logged arm, status, output tokens and latency of the rows they are fitted on.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["REQUEST_COLUMNS", "RoutingContext"]

#: the columns of ``requests`` policies may read: request features, then the logged arm and outcomes fits learn from
REQUEST_COLUMNS = ("ts", "model", "task", "input_tokens", "arm", "status", "output_tokens", "latency_ms")


class RoutingContext(Protocol):
    """n requests to route over K arms.

    eligible (n, K) bool · arms (K,) names in K-axis order · arm_attributes: one row per arm
    (``provider``, ``model``, ``official``, ...) · price_in / price_out (n, K) USD per million tokens in
    force · sample_weight (n,) · metrics: the outcome names of q̂'s last axis · requests: the
    `REQUEST_COLUMNS` of each request.
    """

    eligible: npt.NDArray[np.bool_]
    price_in: npt.NDArray[np.float64]
    price_out: npt.NDArray[np.float64]
    sample_weight: npt.NDArray[np.float64]

    @property
    def n(self) -> int: ...

    @property
    def arms(self) -> tuple[str, ...]: ...

    @property
    def metrics(self) -> tuple[str, ...]: ...

    @property
    def arm_attributes(self) -> pl.DataFrame: ...

    @property
    def requests(self) -> pl.DataFrame: ...
