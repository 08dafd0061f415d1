"""The per-query routing LP of StageRoute, solved exactly and vectorised over queries."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from policies.base import FloatArray

__all__ = ["route_lp"]

_CHUNK = 4096


def route_lp(u: FloatArray, cost: FloatArray, budget: FloatArray | float, capacity: float,
             mask: npt.NDArray[np.bool_]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Solve max u·x s.t. cost·x ≤ budget, Σx = 1, 0 ≤ x ≤ capacity over each row's masked arms, exactly.

    u, cost and mask (n, K); budget a float or (n,). A cap too small to route everything
    (|mask| · capacity < 1) is raised to 1 / |mask|. Rows whose cheapest allocation exceeds the
    budget get that cheapest allocation and are flagged in the returned (n,) mask.

    Notes
    -----
    Parametric Lagrangian, vectorised over rows: for λ ≥ 0 the greedy fill of ``capacity`` in order
    of u − λ·cost solves the relaxed LP, and its cost falls as λ grows. The fill is evaluated inside
    each interval between the pairwise breakpoints (u_a − u_b) / (cost_a − cost_b); the optimum is
    the first interval's fill if it meets the budget, else the mix of the fills on both sides of the
    first breakpoint past which the budget is met that spends it exactly.
    """
    n = u.shape[0]
    b = np.broadcast_to(np.asarray(budget, dtype=np.float64), (n,))
    x, infeasible = np.zeros(u.shape), np.zeros(n, dtype=bool)
    for lo in range(0, n, _CHUNK):
        part = slice(lo, min(n, lo + _CHUNK))
        x[part], infeasible[part] = _route_chunk(u[part], cost[part], b[part], capacity, mask[part])
    return x, infeasible


def _route_chunk(u: FloatArray, cost: FloatArray, b: FloatArray, capacity: float,
                 mask: npt.NDArray[np.bool_]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    n, count = u.shape[0], mask.sum(axis=1)
    width = max(int(count.max(initial=0)), 1)
    rank = np.cumsum(mask, axis=1) - 1
    rows, cols = np.nonzero(mask)
    slot = np.zeros((n, width), dtype=bool)
    slot[rows, rank[rows, cols]] = True
    pu, pc = np.zeros((n, width)), np.zeros((n, width))
    pu[rows, rank[rows, cols]], pc[rows, rank[rows, cols]] = u[rows, cols], cost[rows, cols]
    cap = np.where(slot, np.maximum(capacity, 1.0 / np.maximum(count, 1))[:, None], 0.0)
    i, j = np.triu_indices(width, 1)
    dc = pc[:, i] - pc[:, j]
    ok = slot[:, i] & slot[:, j] & (np.abs(dc) > 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(ok, (pu[:, i] - pu[:, j]) / np.where(ok, dc, 1.0), np.inf)
    lam = np.sort(np.where(lam > 0, lam, np.inf), axis=1)
    if lam.shape[1] > 1:  # merge breakpoints equal up to rounding, so no interval is empty
        with np.errstate(invalid="ignore"):
            dup = np.diff(lam, axis=1) <= 1e-12 * (1.0 + np.abs(lam[:, 1:]))
        lam[:, 1:][dup] = np.inf
        lam = np.sort(lam, axis=1)
    edges = np.concatenate([np.zeros((n, 1)), lam], axis=1)  # interval j is (edges_j, edges_j+1)
    upper = np.concatenate([lam, np.full((n, 1), np.inf)], axis=1)
    mid = np.where(np.isfinite(upper), (edges + upper) / 2, 2 * edges + 1)
    last = np.isfinite(edges).sum(axis=1) - 1
    mid = np.where(np.isfinite(edges), mid, mid[np.arange(n), last][:, None])
    score = np.where(slot[:, None, :], pu[:, None, :] - mid[:, :, None] * pc[:, None, :], -np.inf)
    order = np.argsort(-score, axis=2, kind="stable")
    cap_sorted = np.take_along_axis(np.broadcast_to(cap[:, None, :], score.shape), order, axis=2)
    fill_sorted = np.clip(1.0 - (np.cumsum(cap_sorted, axis=2) - cap_sorted), 0.0, cap_sorted)
    fill = np.zeros(score.shape)
    np.put_along_axis(fill, order, fill_sorted, axis=2)
    spend = (fill * pc[:, None, :]).sum(axis=2)
    meets = spend <= b[:, None] + 1e-12 * (np.abs(b[:, None]) + 1e-300)
    first = np.where(meets.any(axis=1), meets.argmax(axis=1), fill.shape[1] - 1)
    infeasible = ~meets.any(axis=1)
    r = np.arange(n)
    hi, lo_ = fill[r, first], fill[r, np.maximum(first - 1, 0)]
    mix = (first > 0) & ~infeasible
    gap = spend[r, np.maximum(first - 1, 0)] - spend[r, first]
    theta = np.where(mix, (b - spend[r, first]) / np.where(mix & (gap > 0), gap, 1.0), 0.0)
    chosen = theta[:, None] * lo_ + (1.0 - theta[:, None]) * hi
    x = np.zeros(u.shape)
    x[rows, cols] = chosen[rows, rank[rows, cols]]
    return x, infeasible
