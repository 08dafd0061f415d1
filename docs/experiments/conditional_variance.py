"""Which variance DR's interval needs: the exact conditional variance against the spreads a log can estimate.

DR's per-row term is ψ_i = DM_i + w̃_i ε_i, ε_i = y_i − q̂(x_i, a_i). With q̂ exact, its variance is

    V(v) = Σ_i W_i² (DM_i − θ̂)² + Σ_i W_i² w̃_i² v_i,    v_i = Var(Y | x_i, a_i),

over (Σ W)², with the n / (n − 1) correction (for a paired difference the same with DM and w̃ replaced
by their differences). The intervals compared, all θ̂ ± 1.96 √V, differ only in v_i or in how V is taken:

- ``normal``: the empirical variance (ε_i² for v_i, and the cross terms);
- ``arm-pooled``: the run's default, √max(V_emp, V_arm) with v_i the arm's mean squared residual over
  every row logged on it, shrunk toward the all-arm one (`estimators.armpooled.ArmPooled`);
- ``arm-pooled alone``: V_arm without the max;
- ``variance function``: v_i = a + b · q̂(x_i, a_i)², (a, b) ≥ 0 fitted by least squares of ε² over every
  logged row, metric by metric (a spread that grows with the expected outcome, as a lognormal's does);
- ``exact``: v_i the simulator's exact Var(Y | x_i, a_i) (`World.outcome_variances`), what a perfect
  model of the conditional variance would give, as coverage.py's exact q̂ is a perfect outcome model;
- ``exact, max with empirical``: √max(V_emp, V(exact)).

The world is `docs/experiments/coverage.py`'s (n = 2,000, its two targets and their paired difference,
its population truth). The script checks that its own DR, normal and arm-pooled intervals equal the
package's before scoring anything. Run from the project root (about 4 minutes on one core)::

    python docs/experiments/conditional_variance.py --reps 2000 --out docs/experiments/conditional_variance.md

It writes the markdown and, beside it, ``conditional_variance.json`` (every cell, and the first replications'
intervals, which ``tests/integration/test_conditional_variance.py`` re-computes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

from estimators import DR, ArmPooled, Normal, SupportWarning
from estimators.armpooled import PRIOR_ROWS
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import simulate

HERE = Path(__file__).parent
N = 2_000
Z = 1.959963984540054
METHODS = ("normal", "arm-pooled", "arm-pooled alone", "variance function", "exact", "exact, max with empirical")
POLICIES = ("cheapest", "balanced", "diff")
SPOT = 2
FloatArray = npt.NDArray[np.float64]


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


def variance_function(sw: FloatArray, q_logged: FloatArray, eps: FloatArray) -> FloatArray:
    """a + b q̂² per row and metric (n, M), (a, b) ≥ 0 the weighted least-squares fit of ε² on (1, q̂²)."""
    out = np.empty_like(eps)
    for m in range(eps.shape[1]):
        x = np.column_stack([np.ones(len(sw)), q_logged[:, m] ** 2])
        y, root = eps[:, m] ** 2, np.sqrt(sw)
        coef = np.linalg.lstsq(x * root[:, None], y * root, rcond=None)[0]
        if (coef < 0).any():  # the best one-term fit instead
            fits = [max(float(sw * x[:, j] @ y) / float(sw * x[:, j] @ x[:, j]), 0.0) for j in (0, 1)]
            gains = [fits[j] * float(sw * x[:, j] @ y) for j in (0, 1)]
            coef = np.zeros(2)
            coef[int(np.argmax(gains))] = fits[int(np.argmax(gains))]
        out[:, m] = x @ coef
    return out


def replication(rep: int, pols: dict, check: bool = True) -> dict[str, dict[str, tuple[FloatArray, FloatArray]]]:
    """policy -> method -> (value (M,), se (M,)) of one replication."""
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
    # the arm-pooled spread per arm, as `ArmSums.spread`
    resid = np.stack([np.bincount(fb.actions, sw * eps[:, m] ** 2, fb.n_arms) for m in range(eps.shape[1])], axis=1)
    mass = np.bincount(fb.actions, sw, fb.n_arms)[:, None]
    pooled = (resid + PRIOR_ROWS * resid.sum(axis=0) / mass.sum()) / (mass + PRIOR_ROWS)
    spreads = {"arm": pooled[fb.actions], "function": variance_function(sw, q_logged, eps), "exact": exact}
    out: dict[str, dict[str, tuple[FloatArray, FloatArray]]] = {}
    for policy in POLICIES:
        psi = dm[policy] + w[policy][:, None] * eps
        value = sw @ psi / sw.sum()
        v_emp = sw**2 @ (psi - value) ** 2 / sw.sum() ** 2 * fb.n / (fb.n - 1)
        v = {name: _variance(sw, value, dm[policy], w[policy], s) for name, s in spreads.items()}
        se = {"normal": v_emp, "arm-pooled": np.fmax(v_emp, v["arm"]), "arm-pooled alone": v["arm"],
              "variance function": v["function"], "exact": v["exact"], "exact, max with empirical": np.fmax(v_emp, v["exact"])}
        out[policy] = {name: (value, np.sqrt(s)) for name, s in se.items()}
    if check:
        _check_against_package(fb, q, pis, out)
    return out


def _check_against_package(fb: object, q: FloatArray, pis: dict[str, FloatArray], out: dict) -> None:
    """The written-out DR, normal and arm-pooled intervals are the package's (to 1e-9)."""
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


def run(reps: int, truth: dict[str, FloatArray], *, log: bool = True) -> dict:
    """Coverage and mean width of every (policy, method) over ``reps`` replications, and the first ``SPOT`` intervals."""
    pols = _coverage_script().policies()
    hits = {(p, m): np.zeros(len(METRICS)) for p in POLICIES for m in METHODS}
    width = {key: np.zeros(len(METRICS)) for key in hits}
    spot: dict[str, list] = {}
    t0 = time.perf_counter()
    for rep in range(reps):
        for policy, by_method in replication(rep, pols, check=rep < SPOT or rep % 100 == 0).items():
            for method, (value, se) in by_method.items():
                lo, hi = value - Z * se, value + Z * se
                hits[(policy, method)] += (lo <= truth[policy]) & (truth[policy] <= hi)
                width[(policy, method)] += hi - lo
                if rep < SPOT:
                    spot.setdefault(f"{policy}|{method}", []).append([lo.tolist(), hi.tolist()])
        if log and (rep + 1) % 100 == 0:
            print(f"{rep + 1} replications ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"reps": reps, "spot": spot, "cells": {f"{p}|{m}": {"coverage": (hits[(p, m)] / reps).tolist(),
                                                               "width": (width[(p, m)] / reps).tolist()} for p, m in hits}}


def tables(result: dict) -> str:
    """Coverage (%) per policy × method × metric, and mean width relative to the normal interval."""
    head = ["| policy | interval | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    lines = list(head)
    for policy in POLICIES:
        for method in METHODS:
            cov = result["cells"][f"{policy}|{method}"]["coverage"]
            lines.append(f"| {policy} | {method} | " + " | ".join(f"{100 * c:.1f}" for c in cov) + " |")
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
differ only in the conditional variance v_i = Var(Y | x_i, a_i) they put into DR's variance, or in taking the
larger of that and the empirical variance.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--out", default=None, help="markdown file to write (conditional_variance.json beside it)")
    args = parser.parse_args()
    truth = {k: np.asarray(v) for k, v in json.loads((HERE / "coverage.json").read_text())["truth"].items()}
    result = run(args.reps, truth)
    command = f"python docs/experiments/conditional_variance.py --reps {args.reps}"
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
