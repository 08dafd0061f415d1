"""A DR variance that knows each arm's residual spread: interval coverage of the exact truth in two worlds.

DR's per-row term is ψ_i = DM_i + w_i·ε_i with ε_i = y_i − q̂(x_i, a_i). Its usual (empirical) variance
Σ W²(ψ − θ̂)² sees the residuals of the rows the target routes to and nothing else: where a rare, very
long outcome (a stalled first token, a timeout) is missing from those rows, the estimate is low *and*
its standard error small, and the interval misses the truth from below (issues 17 and 21). The
**arm-pooled** variance replaces each routed row's own ε_i² by its arm's mean squared residual over
*every* row logged on that arm, whatever the target does there:

    V_arm = Σ_i W_i² (DM_i − θ̂)² + Σ_a σ̂²_a · Σ_{i: a_i = a} W_i² w_i²,
    σ̂²_a = (Σ_{a_i = a} W ε² + m · σ̄²) / (Σ_{a_i = a} W + m),

σ̂²_a shrunk toward the all-arm mean σ̄² by m = 100 pseudo-rows (an arm with few logged rows borrows
the others' spread). It is E[ψ²]'s form when q̂ is right and each arm's residual spread does not
depend on the request; every piece is a per-arm sum, so it would stay a mergeable reduction.
The interval compared is the normal one with se = √max(V_emp, V_arm) ("arm-pooled"), and Hall's
skew-corrected one with that se ("arm-pooled, skew-corrected"), beside the run's default
(skew-corrected, empirical se) and the plain normal one. The arm-pooled standard error is the package's
(`estimators.armpooled.ArmPooled`, `[evaluation] inference = "arm-pooled"` in a run), in θ̂ ± z · se here; the run's
interval has since been moved by the Cornish–Fisher quantiles of its studentized estimate (same width; chosen in
`docs/experiments/conditional_variance.md`). The others are written out here.

Two worlds, both scored on the simulator's exact truth:

- ``coverage``: the setting of `docs/experiments/coverage.py` (n = 2,000, exact q̂, the ``cheapest``
  and ``balanced`` targets and their paired difference, population truth);
- ``certified``: the setting of `docs/experiments/certified_routing.py` (Qwen3-32B market, 10,000
  requests, LightGBM q̂ cross-fitted, the certified constrained router's evaluated probabilities,
  truth of those probabilities on the log's contexts).

Run from the project root (about 7 + 10 minutes on 2 cores)::

    python docs/experiments/residual_variance.py --reps 500 --seeds 60 --out docs/experiments/residual_variance.md

It writes the markdown and, beside it, ``residual_variance.json`` (every cell, and the first
replications' intervals, which ``tests/integration/test_residual_variance.py`` re-computes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import NormalDist
from types import ModuleType

import numpy as np
import numpy.typing as npt

from estimators import DR, ArmPooled, Estimate, SkewCorrected, SupportWarning
from estimators.feedback import BanditFeedback
from estimators.inference import _hall_inverse
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import simulate

HERE = Path(__file__).parent
METHODS = ("normal", "skew-corrected", "arm-pooled", "arm-pooled, skew-corrected")
SPOT = 2
FloatArray = npt.NDArray[np.float64]


def _sibling(name: str) -> ModuleType:
    """Another experiment script of this folder, imported as the module ``<name>_experiment`` (not ``coverage``,
    which is coverage.py's package)."""
    key = f"{name}_experiment"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def intervals(fb: BanditFeedback, q: FloatArray, pi: FloatArray, baseline: FloatArray | None = None
              ) -> dict[str, tuple[FloatArray, FloatArray]]:
    """The 95 % interval of DR's value (or of the paired difference pi − baseline) by every method, each (M,)."""
    z = NormalDist().inv_cdf(0.975)
    n = fb.n
    rows = np.arange(n)
    y, a = fb.rewards, fb.actions
    sw = np.ones(n) if fb.sample_weight is None else fb.sample_weight
    seen = ~np.isnan(y)
    wt = sw[:, None] * seen                                               # W (n, M): sample weight × outcome observed
    eps = np.where(seen, y - q[rows, a], 0.0)
    dm = np.einsum("nk,nkm->nm", pi, q)
    w = pi[rows, a] / fb.propensities
    if baseline is not None:
        dm, w = dm - np.einsum("nk,nkm->nm", baseline, q), w - baseline[rows, a] / fb.propensities
    psi = dm + w[:, None] * eps
    total, count = wt.sum(0), seen.sum(0)
    theta = (wt * psi).sum(0) / total
    scale = count / (count - 1) / total**2
    se = np.sqrt((wt**2 * (psi - theta) ** 2).sum(0) * scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        k3 = (wt**3 * (psi - theta) ** 3).sum(0) / total**3 * count**2 / ((count - 1) * (count - 2))
        skew = np.nan_to_num(k3 / ((wt**2 * (psi - theta) ** 2).sum(0) / total**2 * count / (count - 1)) ** 1.5)

    def hall(s: FloatArray) -> tuple[FloatArray, FloatArray]:
        return (theta - s * np.maximum(_hall_inverse(z, skew), z), theta - s * np.minimum(_hall_inverse(-z, skew), -z))

    def dr(inference: SkewCorrected | ArmPooled) -> Estimate:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SupportWarning)
            return DR().estimate_difference(fb, target=pi, baseline=baseline, q_hat=q, inference=inference) \
                if baseline is not None else DR().estimate(fb, target=pi, q_hat=q, inference=inference)

    est, pooled = dr(SkewCorrected()), dr(ArmPooled())  # the package's arm-pooled se (estimators/armpooled.py)
    if not np.allclose(est.value, theta, rtol=1e-9, atol=1e-12):
        raise AssertionError(f"DR's value {est.value} differs from the terms' mean {theta}")
    pooled_se = np.asarray(pooled.stderr)
    return {"normal": (theta - z * se, theta + z * se), "skew-corrected": (est.ci_low, est.ci_high),
            "arm-pooled": (theta - z * pooled_se, theta + z * pooled_se), "arm-pooled, skew-corrected": hall(pooled_se)}


def coverage_replication(rep: int, n: int = 2_000) -> dict[str, dict[str, tuple[FloatArray, FloatArray]]]:
    """One replication of coverage.py's setting: policy ("cheapest", "balanced", "diff") → method → interval."""
    cov = _sibling("coverage")
    pols = cov.policies()
    sim = simulate(n, days=cov.DAYS, seed=10_000 + rep)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=cov.SLA)
    fb, q = ds.to_feedback(), sim.world.expected_outcomes(cov.SLA)
    pis = {name: p.action_probabilities(ds) for name, p in pols.items()}
    return {"cheapest": intervals(fb, q, pis["cheapest"]), "balanced": intervals(fb, q, pis["balanced"]),
            "diff": intervals(fb, q, pis["cheapest"], pis["balanced"])}


def certified_seed(seed: int, rows: int = 10_000) -> tuple[FloatArray, dict[str, tuple[FloatArray, FloatArray]]]:
    """One seed of certified_routing.py's setting: the truth of the certified router's evaluated probabilities and
    every method's interval of them."""
    cr = _sibling("certified_routing")
    from ope.evaluation.batch import BatchRows
    from ope.evaluation.certify import fit_cross_fitted
    from ope.models.predictors import PredictorConfig, fit_outcome_models
    from ope.simulate.scenarios import qwen3_32b_spec

    sim = simulate(rows, days=7, seed=seed, spec=qwen3_32b_spec())
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=cr.SLA)
    q = fit_outcome_models(ds, PredictorConfig(folds=5), show_progress=False).q_hat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", SupportWarning)
        evaluated, _ = fit_cross_fitted(cr.router(True, None), BatchRows(ds, ds.to_feedback(), q), 5, inference=SkewCorrected())
    pi = evaluated.action_probabilities(ds, q)
    truth = sim.world.true_value(pi, cr.SLA)
    return np.array([truth[m] for m in ds.metrics]), intervals(ds.to_feedback(), q, pi)


def _cells(results: list[dict[str, tuple[FloatArray, FloatArray]]], truths: list[FloatArray]) -> dict:
    """Coverage and mean width per method over results (each method → interval) against their truths."""
    out = {}
    for method in METHODS:
        hit = [(r[method][0] <= t) & (t <= r[method][1]) for r, t in zip(results, truths, strict=True)]
        width = [r[method][1] - r[method][0] for r in results]
        out[method] = {"coverage": np.mean(hit, 0).tolist(), "width": np.mean(width, 0).tolist()}
    return out


def _pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))  # no fork under polars' threads


def run_coverage(reps: int, jobs: int) -> dict:
    """coverage.py's world: cells per policy, and the first replications' intervals."""
    cov = _sibling("coverage")
    true = cov.truth(cov.policies())
    with _pool(jobs) as pool:
        reps_out = list(pool.map(coverage_replication, range(reps), chunksize=10))
    spot = {f"{p}|{m}": [np.stack(r[p][m]).tolist() for r in reps_out[:SPOT]] for p in true for m in METHODS}
    return {"reps": reps, "spot": spot, "truth": {k: v.tolist() for k, v in true.items()},
            "cells": {p: _cells([r[p] for r in reps_out], [true[p]] * reps) for p in ("cheapest", "balanced", "diff")}}


def run_certified(seeds: range, jobs: int) -> dict:
    """certified_routing.py's world: cells of the certified router's evaluated probabilities."""
    with _pool(jobs) as pool:
        out = list(pool.map(certified_seed, seeds))
    return {"seeds": [seeds.start, seeds.stop], "cells": {"certified": _cells([r for _, r in out], [t for t, _ in out])}}


def tables(coverage: dict, certified: dict) -> str:
    """The markdown: coverage (%) and mean width relative to the skew-corrected interval, per world, policy, method."""
    lines = ["| world | policy | interval | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS)]
    widths = ["| world | policy | interval | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS)]
    for world, res in (("coverage (n = 2,000)", coverage), ("certified (n = 10,000)", certified)):
        for policy, cells in res["cells"].items():
            base = np.array(cells["skew-corrected"]["width"])
            for method in METHODS:
                cov = cells[method]["coverage"]
                lines.append(f"| {world} | {policy} | {method} | " + " | ".join(f"{100 * c:.1f}" for c in cov) + " |")
                if method != "skew-corrected":
                    ratio = np.array(cells[method]["width"]) / base
                    widths.append(f"| {world} | {policy} | {method} | " + " | ".join(f"{r:.3f}" for r in ratio) + " |")
    return "\n".join([*lines, "", "Mean width relative to the skew-corrected interval (same replications):", "", *widths]) + "\n"


HEADER = """# A DR variance that knows each arm's residual spread

Written by `docs/experiments/residual_variance.py` (its docstring has the method and the two worlds). Each
cell is the share (in %) of replications whose DR 95 % interval holds the exact truth; `diff` is the paired
difference `cheapest − balanced`. "skew-corrected" was `ope run`'s default interval when this page was
written; "arm-pooled" is θ̂ ± 1.96 se with the standard error of `estimators.armpooled.ArmPooled` (`[evaluation]
inference = "arm-pooled"`, the default now, whose interval is since moved by Cornish–Fisher quantiles at the same
width: `conditional_variance.md`).

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=500, help="replications of coverage.py's world (n = 2,000)")
    parser.add_argument("--seeds", type=int, default=60, help="seeds of certified_routing.py's world")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=None, help="markdown file to write (the JSON beside it)")
    args = parser.parse_args()
    command = (f"python docs/experiments/residual_variance.py --reps {args.reps} --seeds {args.seeds} "
               f"--first-seed {args.first_seed}")
    coverage = run_coverage(args.reps, args.jobs)
    certified = run_certified(range(args.first_seed, args.first_seed + args.seeds), args.jobs)
    text = HEADER + f"Command: `{command}`\n\n" + tables(coverage, certified)
    print(text)
    if args.out:
        out = Path(args.out)
        old = out.read_text() if out.exists() else ""
        reading = old[old.index("\n## Reading"):] if "\n## Reading" in old else ""
        out.write_text(text.rstrip("\n") + "\n" + reading)
        payload = {"command": command, "coverage": coverage, "certified": certified}
        out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
