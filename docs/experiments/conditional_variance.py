"""Which variance DR's interval needs: the exact conditional variance against the spreads a log can estimate.

DR's per-row term is ψ_i = DM_i + w̃_i ε_i, ε_i = y_i − q̂(x_i, a_i). With q̂ exact, its variance is

    V(v) = Σ_i W_i² (DM_i − θ̂)² + Σ_i W_i² w̃_i² v_i,    v_i = Var(Y | x_i, a_i),

over (Σ W)², with the n / (n − 1) correction (for a paired difference the same with DM and w̃ replaced
by their differences). The intervals compared differ in v_i, in how V is taken, or in the quantiles:

- ``normal``: the empirical variance (ε_i² for v_i, and the cross terms);
- ``arm-pooled``: √max(V_emp, V_arm) with v_i the arm's mean squared residual over every row logged on it, shrunk
  toward the all-arm one, in θ̂ ± 1.96 se: the run's default interval before its Cornish–Fisher quantiles;
- ``arm-pooled alone``: V_arm without the max;
- ``variance function``: v_i = a + b · q̂(x_i, a_i)², (a, b) ≥ 0 fitted by least squares of ε² over every
  logged row, metric by metric (a spread that grows with the expected outcome, as a lognormal's does);
- ``exact``: v_i the simulator's exact Var(Y | x_i, a_i) (`World.outcome_variances`), what a perfect
  model of the conditional variance would give, as coverage.py's exact q̂ is a perfect outcome model;
- ``exact, max with empirical``: √max(V_emp, V(exact));
- ``variance function with failure rate``: v_i = a + b · q̂² + c · (1 − q̂_success), (a, b, c) ≥ 0 by non-negative
  least squares: a request's failures (120 s timeouts) are most of TTFT's spread;
- ``arm relative spread, calibrated``: v_i = c · ρ_k · g(q̂_i) with ρ_k the arm's mean of ε² / g(q̂) (shrunk as the
  arm-pooled spread), g = q̂² (q̂(1 − q̂) for success, satisfaction and SLA hit), and one level c per metric that makes
  Σ W v = Σ W ε² over every row: each arm's shape from its own rows, the size of the rare heavy outcomes from all;
- ``studentized bootstrap`` and ``studentized bootstrap, arm-pooled se``: the bootstrap-t interval
  [θ̂ − t*₀.₉₇₅ · se, θ̂ − t*₀.₀₂₅ · se], t* = (θ̂* − θ̂) / se* over the package's keyed Poisson(1) multipliers
  (`estimators.resample`, `BOOT` replicates), studentized by the empirical or by the arm-pooled (max) se;
- ``arm-pooled alone, Cornish–Fisher``: V_arm without the max, and in place of ±1.96 the Cornish–Fisher quantiles of
  its own studentized estimate, whose skewness and mean follow from per-arm third moments (`cornish_fisher`);
- ``arm-pooled, Cornish–Fisher``: √max(V_emp, V_arm) with the same quantiles: the run's default interval
  (`estimators.armpooled.ArmPooled`).

Every other interval is θ̂ ± 1.96 √V.

The world is `docs/experiments/coverage.py`'s (n = 2,000, its two targets and their paired difference,
its population truth). The script checks that its own DR, normal and arm-pooled standard errors and its
arm-pooled Cornish–Fisher interval equal the package's before scoring anything. Run from the project root (about 4 minutes with two processes, half of it the
bootstrap)::

    python docs/experiments/conditional_variance.py --reps 2000 --jobs 2 --out docs/experiments/conditional_variance.md

It writes the markdown and, beside it, ``conditional_variance.json`` (every cell, and the first replications'
intervals, which ``tests/integration/test_conditional_variance.py`` re-computes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
from scipy.optimize import nnls

from estimators import DR, ArmPooled, Normal, SupportWarning
from estimators.armpooled import PRIOR_ROWS
from estimators.resample import poisson_multipliers
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import simulate

HERE = Path(__file__).parent
N = 2_000
Z = 1.959963984540054
METHODS = ("normal", "arm-pooled", "arm-pooled alone", "variance function", "variance function with failure rate",
           "arm relative spread, calibrated", "studentized bootstrap", "studentized bootstrap, arm-pooled se",
           "arm-pooled alone, Cornish–Fisher", "arm-pooled, Cornish–Fisher", "exact",
           "exact, max with empirical")
#: bootstrap replicates of the studentized bootstrap
BOOT = 200
#: metrics that are 0/1 outcomes (their spread is q̂(1 − q̂))
BINARY = ("success", "satisfaction", "sla_hit")
POLICIES = ("cheapest", "balanced", "diff")
SPOT = 2
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _coverage_script() -> ModuleType:
    """docs/experiments/coverage.py, imported as ``coverage_experiment`` (its world, targets and truth)."""
    key = "coverage_experiment"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / "coverage.py")
        assert spec is not None and spec.loader is not None
        sys.modules[key] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[key]


def _variance(sw: FloatArray, theta: FloatArray, dm: FloatArray, w: FloatArray, v: FloatArray) -> FloatArray:
    """V(v) (M,) for DM parts dm (n, M) centred at the estimate θ̂, weights w (n,) and per-row variances v (n, M)."""
    return (sw**2 @ (dm - theta) ** 2 + (sw * w) ** 2 @ v) / sw.sum() ** 2 * len(sw) / (len(sw) - 1)


def variance_function(sw: FloatArray, features: FloatArray, eps: FloatArray) -> FloatArray:
    """X β per row and metric (n, M): β ≥ 0 the weighted non-negative least-squares fit of ε² on the metric's features
    ``features`` (n, M, F) (columns scaled to unit norm for the solver)."""
    out = np.empty_like(eps)
    root = np.sqrt(sw)
    for m in range(eps.shape[1]):
        x = features[:, m]
        scale = np.sqrt(sw @ (x * x))
        beta = nnls(x / scale * root[:, None], eps[:, m] ** 2 * root)[0] / scale
        out[:, m] = x @ beta
    return out


def arm_means(actions: IntArray, n_arms: int, sw: FloatArray, x: FloatArray) -> FloatArray:
    """Each arm's W-weighted mean of x (n, M), shrunk toward the all-arm mean by `PRIOR_ROWS` pseudo-rows (K, M): for
    x = ε², the arm-pooled spread of `ArmSums.spread`."""
    sums = np.stack([np.bincount(actions, sw * col, n_arms) for col in x.T], axis=1)
    mass = np.bincount(actions, sw, n_arms)[:, None]
    return (sums + PRIOR_ROWS * sums.sum(axis=0) / mass.sum()) / (mass + PRIOR_ROWS)


def arm_relative_spread(sw: FloatArray, actions: IntArray, n_arms: int, shape: FloatArray, eps: FloatArray) -> FloatArray:
    """c · ρ_k · g per row and metric (n, M): ρ_k the arm's mean of ε² / g shrunk toward the all-arm one by `PRIOR_ROWS`,
    g = ``shape`` (n, M), c the level with Σ W v = Σ W ε²."""
    g = np.maximum(shape, 1e-300)
    v = arm_means(actions, n_arms, sw, eps**2 / g)[actions] * g
    return v * (sw @ eps**2) / (sw @ v)


def _resampled(p: FloatArray, sw: FloatArray, dm: FloatArray, w: FloatArray, eps: FloatArray, actions: IntArray,
               n_arms: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """θ̂, V_emp and V_arm (B, M) of the DR terms under multipliers p (B, n) (ones for the sample itself)."""
    n = len(sw)
    psi = dm + w[:, None] * eps
    pw, p2 = p * sw, p * sw**2                                            # row counts times W and times W²
    total = pw.sum(axis=1)[:, None]
    theta = pw @ psi / total
    centred = lambda x: p2 @ x**2 - 2 * theta * (p2 @ x) + theta**2 * p2.sum(axis=1)[:, None]
    onehot = np.eye(n_arms)[actions]
    resid = (pw @ (onehot[:, :, None] * eps[:, None] ** 2).reshape(n, -1)).reshape(len(p), n_arms, -1)
    mass = (pw @ onehot)[:, :, None]
    spread = (resid + PRIOR_ROWS * resid.sum(axis=1, keepdims=True) / mass.sum(axis=1, keepdims=True)) / (mass + PRIOR_ROWS)
    v_arm = centred(dm) + np.einsum("bkm,bk->bm", spread, (p2 * w**2) @ onehot)
    factor = n / (n - 1) / total**2
    return theta, centred(psi) * factor, v_arm * factor


def cornish_fisher(sw: FloatArray, actions: IntArray, n_arms: int, dm: FloatArray, w: FloatArray, eps: FloatArray
                   ) -> dict[str, tuple[FloatArray, FloatArray]]:
    """The Cornish–Fisher quantiles of the arm-pooled t = (θ̂ − θ) / se_arm, with se_arm and with the default's se.

    To first order t has mean −c/2 and skewness κ − 3c, with κ the estimate's skewness and c = cov(θ̂, V̂) / se³
    (for the empirical variance c = κ: Hall's −κ/2 and −2κ). Both come from per-arm moments, as V_arm does:
    κ from Σ W³ [(DM − θ̂)³ + 3 (DM − θ̂) w̃² σ̂²_k + w̃³ μ̂3_k] with μ̂3_k the arm's mean ε³ shrunk as σ̂²_k, and c from
    the covariance of Σ W w̃ ε with each arm's Σ W ε² (its own rows and the all-arm shrinkage target). The interval is
    [θ̂ − se · t(z), θ̂ − se · t(−z)], t(z) = −c/2 + z + (κ − 3c)(z² − 1)/6: as wide as θ̂ ± z · se, moved by
    se · (c/2 − (κ − 3c)(z² − 1)/6), held within ± z · se (the estimate stays inside). With se = √max(V_emp, V_arm)
    it is the run's default interval.
    """
    mass = np.bincount(actions, sw, n_arms)[:, None]
    s2, s3 = arm_means(actions, n_arms, sw, eps**2), arm_means(actions, n_arms, sw, eps**3)
    total = sw.sum()
    value = sw @ (dm + w[:, None] * eps) / total
    d = dm - value
    gram = np.bincount(actions, sw**2 * w**2, n_arms)[:, None]
    first = np.bincount(actions, sw**2 * w, n_arms)[:, None]
    k2 = sw**2 @ d**2 + (gram * s2).sum(axis=0)
    k3 = (sw**3 @ d**3 + 3 * (sw**3 * w**2) @ (d * s2[actions])
          + (np.bincount(actions, sw**3 * w**3, n_arms)[:, None] * s3).sum(axis=0))
    share = PRIOR_ROWS / (mass + PRIOR_ROWS)
    cov = (gram * first * s3 / (mass + PRIOR_ROWS)).sum(axis=0) + (gram * share).sum(axis=0) * (first * s3).sum(axis=0) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa, c = np.where(k2 > 0, k3 / k2**1.5, 0.0), np.where(k2 > 0, cov / k2**1.5, 0.0)
    factor = len(sw) / (len(sw) - 1) / total**2
    v_emp = sw**2 @ (d + w[:, None] * eps) ** 2 * factor
    move = np.clip(-c / 2 + (kappa - 3 * c) * (Z * Z - 1) / 6, -Z, Z)
    se = {"arm-pooled alone, Cornish–Fisher": np.sqrt(k2 * factor), "arm-pooled, Cornish–Fisher": np.sqrt(np.fmax(v_emp, k2 * factor))}
    return {name: (value - s * (Z + move), value + s * (Z - move)) for name, s in se.items()}


def studentized(sw: FloatArray, keys: npt.NDArray[np.uint64], dm: FloatArray, w: FloatArray, eps: FloatArray,
                actions: IntArray, n_arms: int) -> dict[str, tuple[FloatArray, FloatArray]]:
    """The bootstrap-t intervals (low, high) studentized by the empirical and by the arm-pooled (max) se."""
    args = (sw, dm, w, eps, actions, n_arms)
    theta, v_emp, v_arm = _resampled(np.ones((1, len(sw))), *args)
    theta_b, v_emp_b, v_arm_b = _resampled(poisson_multipliers(keys, np.arange(BOOT)), *args)
    out = {}
    for name, var, var_b in (("studentized bootstrap", v_emp, v_emp_b),
                             ("studentized bootstrap, arm-pooled se", np.fmax(v_emp, v_arm), np.fmax(v_emp_b, v_arm_b))):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (theta_b - theta) / np.sqrt(var_b)
        low, high = np.nanquantile(t, [0.025, 0.975], axis=0)
        out[name] = (theta[0] - high * np.sqrt(var[0]), theta[0] - low * np.sqrt(var[0]))
    return out


def replication(rep: int, pols: dict, check: bool = True) -> dict[str, dict[str, tuple[FloatArray, FloatArray]]]:
    """policy -> method -> the 95 % interval (low (M,), high (M,)) of one replication."""
    sim = simulate(N, days=2, seed=10_000 + rep)
    cov = _coverage_script()
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=cov.SLA)
    fb, q = ds.to_feedback(), sim.world.expected_outcomes(cov.SLA)
    rows = np.arange(fb.n)
    sw = fb.sample_weight if fb.sample_weight is not None else np.ones(fb.n)
    q_logged, exact = q[rows, fb.actions], sim.world.outcome_variances(cov.SLA)[rows, fb.actions]
    eps = fb.rewards - q_logged
    pis = {name: p.action_probabilities(ds) for name, p in pols.items()}
    dm = {name: np.einsum("ik,ikm->im", pi, q) for name, pi in pis.items()}
    w = {name: pi[rows, fb.actions] / fb.propensities for name, pi in pis.items()}
    dm["diff"], w["diff"] = dm["cheapest"] - dm["balanced"], w["cheapest"] - w["balanced"]
    pooled = arm_means(fb.actions, fb.n_arms, sw, eps**2)
    ones, fail = np.ones_like(q_logged), np.repeat(1 - q_logged[:, [METRICS.index("success")]], len(METRICS), axis=1)
    binary = np.isin(METRICS, BINARY)
    shape = np.where(binary, q_logged * (1 - q_logged), q_logged**2)
    spreads = {"arm": pooled[fb.actions], "function": variance_function(sw, np.stack([ones, q_logged**2], axis=2), eps),
               "failures": variance_function(sw, np.stack([ones, q_logged**2, fail], axis=2), eps),
               "relative": arm_relative_spread(sw, fb.actions, fb.n_arms, shape, eps), "exact": exact}
    out: dict[str, dict[str, tuple[FloatArray, FloatArray]]] = {}
    checked: dict[str, dict[str, tuple[FloatArray, FloatArray]]] = {}
    for policy in POLICIES:
        psi = dm[policy] + w[policy][:, None] * eps
        value = sw @ psi / sw.sum()
        v_emp = sw**2 @ (psi - value) ** 2 / sw.sum() ** 2 * fb.n / (fb.n - 1)
        v = {name: _variance(sw, value, dm[policy], w[policy], s) for name, s in spreads.items()}
        var = {"normal": v_emp, "arm-pooled": np.fmax(v_emp, v["arm"]), "arm-pooled alone": v["arm"],
               "variance function": v["function"], "variance function with failure rate": v["failures"],
               "arm relative spread, calibrated": v["relative"], "exact": v["exact"],
               "exact, max with empirical": np.fmax(v_emp, v["exact"])}
        out[policy] = {name: (value - Z * np.sqrt(x), value + Z * np.sqrt(x)) for name, x in var.items()}
        out[policy] |= studentized(sw, fb.keys if fb.keys is not None else rows.astype(np.uint64), dm[policy], w[policy],
                                   eps, fb.actions, fb.n_arms)
        out[policy] |= cornish_fisher(sw, fb.actions, fb.n_arms, dm[policy], w[policy], eps)
        checked[policy] = {name: (value, np.sqrt(var[name])) for name in ("normal", "arm-pooled")}
        checked[policy]["moved"] = out[policy]["arm-pooled, Cornish–Fisher"]
    if check:
        _check_against_package(fb, q, pis, checked)
    return {policy: {name: out[policy][name] for name in METHODS} for policy in POLICIES}


def _check_against_package(fb: object, q: FloatArray, pis: dict[str, FloatArray], out: dict) -> None:
    """The written-out DR value, normal and arm-pooled standard errors and the arm-pooled Cornish–Fisher interval are
    the package's (to 1e-9; the interval's ends relative to its width)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        dr = DR()
        paired = dr.partial(fb, target=pis["cheapest"], baseline=pis["balanced"], q_hat=q, arm_sums=True)
        alone = dr.partial(fb, target=pis["balanced"], q_hat=q, arm_sums=True)
        for policy, part, kind in (("cheapest", paired, "value"), ("diff", paired, "difference"), ("balanced", alone, "value")):
            for method, inference in (("normal", Normal()), ("arm-pooled", ArmPooled())):
                est = dr.finalize(part, inference=inference, kind=kind)
                value, se = out[policy][method]
                np.testing.assert_allclose(est.value, value, rtol=1e-9, err_msg=f"{policy} {method}")
                np.testing.assert_allclose(est.stderr, se, rtol=1e-9, err_msg=f"{policy} {method}")
            low, high = out[policy]["moved"]
            est = dr.finalize(part, inference=ArmPooled(), kind=kind)
            gap = np.fmax(np.abs(est.ci_low - low), np.abs(est.ci_high - high)) / (high - low)
            assert (gap < 1e-9).all(), (policy, "Cornish–Fisher", gap)


def _chunk(first: int, last: int, truth: dict[str, FloatArray], log: bool) -> dict:
    """Hits, misses with the truth above the interval, summed widths and the first ``SPOT`` intervals of the
    replications first … last − 1."""
    pols = _coverage_script().policies()
    hits = {(p, m): np.zeros(len(METRICS)) for p in POLICIES for m in METHODS}
    width = {key: np.zeros(len(METRICS)) for key in hits}
    above = {key: np.zeros(len(METRICS)) for key in hits}
    spot: dict[str, list] = {}
    t0 = time.perf_counter()
    for rep in range(first, last):
        for policy, by_method in replication(rep, pols, check=rep < SPOT or rep % 100 == 0).items():
            for method, (lo, hi) in by_method.items():
                hits[(policy, method)] += (lo <= truth[policy]) & (truth[policy] <= hi)
                width[(policy, method)] += hi - lo
                above[(policy, method)] += truth[policy] > hi
                if rep < SPOT:
                    spot.setdefault(f"{policy}|{method}", []).append([lo.tolist(), hi.tolist()])
        if log and (rep + 1 - first) % 100 == 0:
            print(f"replications {first}–{rep}: {time.perf_counter() - t0:.0f} s", flush=True)
    return {"hits": hits, "above": above, "width": width, "spot": spot}


def run(reps: int, truth: dict[str, FloatArray], *, log: bool = True, jobs: int = 1) -> dict:
    """Coverage, misses above and mean width of every (policy, method) over ``reps`` replications (split over ``jobs``
    processes), and the first ``SPOT`` intervals."""
    bounds = np.linspace(0, reps, jobs + 1).astype(int)
    if jobs == 1:
        parts = [_chunk(0, reps, truth, log)]
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_chunk, bounds[:-1], bounds[1:], [truth] * jobs, [log] * jobs))
    keys = parts[0]["hits"]
    return {"reps": reps, "spot": parts[0]["spot"],
            "cells": {f"{p}|{m}": {field: (sum(x[key][(p, m)] for x in parts) / reps).tolist()
                                   for field, key in (("coverage", "hits"), ("above", "above"), ("width", "width"))}
                      for p, m in keys}}


def tables(result: dict) -> str:
    """Coverage (%) per policy × method × metric, the misses with the truth above the interval (%), and mean width
    relative to the normal interval."""
    head = ["| policy | interval | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    lines = list(head)
    for policy in POLICIES:
        for method in METHODS:
            cov = result["cells"][f"{policy}|{method}"]["coverage"]
            lines.append(f"| {policy} | {method} | " + " | ".join(f"{100 * c:.1f}" for c in cov) + " |")
    above_head = "Misses with the truth above the interval (% of replications; a symmetric miss rate is 2.5 above, 2.5 below):"
    lines += ["", above_head, "", *head]
    for policy in POLICIES:
        for method in METHODS:
            above = result["cells"][f"{policy}|{method}"]["above"]
            lines.append(f"| {policy} | {method} | " + " | ".join(f"{100 * c:.1f}" for c in above) + " |")
    lines += ["", "Mean width relative to the normal interval (same replications):", "", *head]
    for policy in POLICIES:
        base = np.array(result["cells"][f"{policy}|normal"]["width"])
        for method in METHODS[1:]:
            ratio = np.array(result["cells"][f"{policy}|{method}"]["width"]) / base
            lines.append(f"| {policy} | {method} | " + " | ".join(f"{r:.3f}" for r in ratio) + " |")
    return "\n".join(lines) + "\n"


HEADER = """# Which variance DR's interval needs

Written by `docs/experiments/conditional_variance.py` (its docstring has the method). Each cell is the share of
replications (in %) whose DR 95 % interval holds the policy's exact population value, in the world of
`coverage.md` at n = 2,000 (exact q̂); `diff` is the paired difference `cheapest − balanced`. The intervals
differ only in the conditional variance v_i = Var(Y | x_i, a_i) they put into DR's variance, in taking the
larger of that and the empirical variance, or (the studentized bootstraps and Cornish–Fisher) in the quantiles
that replace ±1.96.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=1, help="processes the replications are split over")
    parser.add_argument("--out", default=None, help="markdown file to write (conditional_variance.json beside it)")
    args = parser.parse_args()
    truth = {k: np.asarray(v) for k, v in json.loads((HERE / "coverage.json").read_text())["truth"].items()}
    result = run(args.reps, truth, jobs=args.jobs)
    command = f"python docs/experiments/conditional_variance.py --reps {args.reps} --jobs {args.jobs}"
    text = HEADER + f"Command: `{command}` ({args.reps} replications; the truth is coverage.json's).\n\n" + tables(result)
    print(text)
    if args.out:
        out = Path(args.out)
        reading = out.read_text() if out.exists() else ""
        reading = reading[reading.index("\n## Reading"):] if "\n## Reading" in reading else ""
        out.write_text(text + reading)
        out.with_suffix(".json").write_text(json.dumps({"command": command, "result": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
