"""Which estimator to trust: Lepski-style selection over candidates ordered by the width of their intervals.

Notes
-----
SLOPE (Su, Srinath & Krishnamurthy, "Adaptive estimator selection for off-policy evaluation",
ICML 2020): order the candidates from the widest interval (least biased, e.g. IPS) to the narrowest
(most biased, e.g. DM) and walk down the order, keeping a candidate while its estimate is consistent
with every wider one kept so far,

    |θ̂_i − θ̂_j| ≤ cnf_i + C · cnf_j   for all kept j,   C = √6 − 1,

stopping at the first that is not and selecting the last kept. The test and C are the SLOPE++ form
of Tucker & Lee (2021), as Open Bandit Pipeline implements SLOPE (`_tune_hyperparam_with_slope`);
cnf_i is the half-width of candidate i's interval. Candidates without a finite estimate and
interval take no part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SLOPE_C", "Selection", "slope"]

SLOPE_C = math.sqrt(6.0) - 1.0


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen candidate (an index, or None when none has a finite interval) and why, in words."""

    index: int | None
    reason: str


def slope(names: list[str], values: npt.ArrayLike, halfwidths: npt.ArrayLike) -> Selection:
    """SLOPE over candidates ``names`` with estimates ``values`` and interval half-widths ``halfwidths``.

    >>> slope(["IPS", "DR", "DM"], [1.0, 1.1, 2.0], [0.5, 0.2, 0.05]).index
    1
    """
    v, h = np.asarray(values, dtype=np.float64), np.asarray(halfwidths, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(v) & np.isfinite(h) & (h >= 0))
    if ok.size == 0:
        return Selection(None, "no candidate has a finite estimate and interval")
    order = ok[np.argsort(-h[ok], kind="stable")]
    kept = [int(order[0])]
    for i in order[1:]:
        j = np.asarray(kept)
        gap = np.abs(v[j] - v[i]) - (h[i] + SLOPE_C * h[j])
        if (gap > 0).any():
            clash = names[int(j[np.argmax(gap)])]
            return Selection(kept[-1], f"narrowest interval consistent with the wider ones; {names[int(i)]} (narrower) "
                                       f"disagrees with {clash} beyond their intervals, so it is likely biased")
        kept.append(int(i))
    if len(kept) == 1:
        return Selection(kept[0], "the only candidate with a finite interval")
    return Selection(kept[-1], "narrowest interval, consistent with every wider one")
