"""The routing LP over the eligible (request, arm) pairs, built vectorised with cvxpy.

One variable per eligible pair: its free mass y = x − floor ≥ 0, where floor = ε / |E_i| is the
exploration floor. Rows sum through one sparse (n × P) matrix; mean targets are the rows of one
sparse (C × P) matrix, so building the problem never loops over requests.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from policies.base import FloatArray, PolicyError

__all__ = ["LPSolution", "RoutingLP", "stratified_rows"]

IntArray = npt.NDArray[np.int64]


def stratified_rows(strata: npt.NDArray[np.generic], size: int, seed: int) -> tuple[IntArray, FloatArray]:
    """About ``size`` row indices drawn per stratum in proportion (≥ 1 each), and each kept row's inflation.

    The inflation n_s / m_s (stratum rows over rows kept) multiplies the sample weights, so weighted
    means over the sample estimate those over all rows. Deterministic given ``seed``.
    """
    n = strata.shape[0]
    if n <= size:
        return np.arange(n), np.ones(n)
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    quota = np.maximum(1, counts * size // n)
    order = np.lexsort((np.random.default_rng(seed).random(n), inverse))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - (np.cumsum(counts) - counts)[inverse[order]]
    idx = np.flatnonzero(rank < quota[inverse])
    return idx, (counts / quota)[inverse[idx]]


@dataclass(frozen=True, slots=True)
class LPSolution:
    """A solve: cvxpy status, free mass per pair (empty unless solved), target multipliers ≥ 0, timings."""

    status: str
    y: FloatArray
    duals: FloatArray
    stats: dict[str, float]

    @property
    def solved(self) -> bool:
        return self.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)


@dataclass(slots=True)
class RoutingLP:
    """The eligible pairs of the fitted requests; ``v`` (n,) request weights summing to 1.

    Every pair-indexed array (length P) follows ``rows, cols`` = ``np.nonzero(eligible)``.
    """

    eligible: npt.NDArray[np.bool_]
    v: FloatArray
    exploration: float
    solver: str
    rows: IntArray = field(init=False)
    cols: IntArray = field(init=False)
    floor: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        self.rows, self.cols = np.nonzero(self.eligible)
        self.floor = self.exploration / self.eligible.sum(axis=1)[self.rows]

    def dense(self, pairs: FloatArray) -> FloatArray:
        """Pair values as an (n, K) matrix, zero outside eligible."""
        out = np.zeros(self.eligible.shape)
        out[self.rows, self.cols] = pairs
        return out

    def mean(self, g: FloatArray, y: FloatArray) -> float:
        """Σ_i v_i Σ_a x_ia g_ia for x = floor + y."""
        return float(self.v[self.rows] @ (g * (self.floor + y)))

    def best_alone(self, g: FloatArray) -> float:
        """min over x of Σ v x·g with no target at all, in closed form: ε spread, 1 − ε on each row's min."""
        dense = self.dense(g)
        mean = dense.sum(axis=1) / self.eligible.sum(axis=1)
        best = np.where(self.eligible, dense, np.inf).min(axis=1)
        return float(self.v @ (self.exploration * mean + (1 - self.exploration) * best))

    def calibrate(self, sets: list[tuple[IntArray, IntArray]], fixed: FloatArray, objective: FloatArray,
                  g: FloatArray, bound: FloatArray) -> tuple[list[FloatArray], float] | None:
        """One split of the free mass per tie set that minimises the objective subject to the targets.

        ``sets`` the (rows, arms) of each tie set; ``fixed`` (n, K) the rule's mass that does not
        depend on the splits (exploration, and the best arm of rows without a tie). The splits are
        shared by all rows of a set, so the result is a rule, not a per-row solution. Returns the
        splits and the objective Σ v x·objective they reach, or None when no split meets every target.
        """
        n, free = self.eligible.shape[0], 1.0 - self.exploration
        per_pair = [self.dense(row) for row in (objective, *g)]
        fixed_part = n * np.array([self.v @ (fixed * d).sum(axis=1) for d in per_pair])
        if not sets:
            return ([], fixed_part[0] / n) if (fixed_part[1:] <= n * (bound + 1e-7)).all() else None
        coef = n * free * np.array([np.concatenate([self.v[rows] @ d[np.ix_(rows, cols)] for rows, cols in sets])
                                    for d in per_pair])
        sizes = np.array([cols.size for _, cols in sets])
        w = cp.Variable(int(sizes.sum()), nonneg=True)
        set_sum = sp.csr_matrix((np.ones(w.size), (np.repeat(np.arange(sizes.size), sizes), np.arange(w.size))))
        constraints = [set_sum @ w == 1.0]
        if g.shape[0]:
            constraints.append(coef[1:] @ w <= n * bound - fixed_part[1:])
        problem = cp.Problem(cp.Minimize(coef[0] @ w), constraints)
        self._run(problem)
        if problem.status != cp.OPTIMAL:
            return None
        splits = [np.maximum(part, 0.0) / np.maximum(part, 0.0).sum() for part in np.split(w.value, np.cumsum(sizes)[:-1])]
        return splits, float(fixed_part[0] + coef[0] @ np.concatenate(splits)) / n

    def solve(self, objective: FloatArray, g: FloatArray, bound: FloatArray) -> LPSolution:
        """Minimise Σ v x·objective subject to Σ v x·g_c ≤ bound_c (g (C, P), bound (C,))."""
        n_pairs, n = self.rows.shape[0], self.eligible.shape[0]
        wv = n * self.v[self.rows]  # weights of mean 1, not sum 1: CLARABEL then needs ~40 % fewer iterations
        y = cp.Variable(n_pairs, nonneg=True)
        row_sum = sp.csr_matrix((np.ones(n_pairs), (self.rows, np.arange(n_pairs))), shape=(n, n_pairs))
        constraints = [row_sum @ y == 1.0 - self.exploration]
        if g.shape[0]:
            a = sp.csr_matrix(g * wv)
            constraints.append(a @ y <= n * bound - a @ self.floor)
        problem = cp.Problem(cp.Minimize((wv * objective) @ y), constraints)
        start = time.perf_counter()
        self._run(problem)
        stats = {"seconds": time.perf_counter() - start, "compile_seconds": problem.compilation_time or 0.0,
                 "solver_seconds": problem.solver_stats.solve_time or 0.0,
                 "iterations": float(problem.solver_stats.num_iters or 0), "pairs": float(n_pairs)}
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            return LPSolution(problem.status, np.empty(0), np.empty(0), stats)
        if problem.status == cp.OPTIMAL_INACCURATE:
            warnings.warn(f"The {self.solver} solver stopped inaccurate on the routing LP.", RuntimeWarning, stacklevel=3)
        duals = np.atleast_1d(constraints[1].dual_value) if g.shape[0] else np.empty(0)
        return LPSolution(problem.status, np.maximum(y.value, 0.0), np.maximum(duals, 0.0), stats)

    def _run(self, problem: cp.Problem) -> None:
        """Solve; HiGHS with its interior-point method (its default simplex is ~20x slower here, DESIGN §8)."""
        options = {"highs_options": {"solver": "ipm"}} if self.solver == "HIGHS" else {}
        try:
            problem.solve(solver=self.solver, **options)
        except cp.error.SolverError as exc:
            msg = f"The {self.solver} solver failed on the routing LP ({exc}). Try solver='CLARABEL' or 'HIGHS'."
            raise PolicyError(msg) from exc
