"""How often the 95 % intervals cover the simulator's exact truth, by metric × estimator × n × interval method.

Setup (the one of ``tests/integration/test_truth.py``): a simulated two-day market; two realistic
targets fitted on a reference log (seed 900) — ``cheapest`` (cheapest eligible arm, 30 % uniform
exploration) and ``balanced`` (price-weighted balancing half mixed with uniform) — and their paired
difference ``cheapest − balanced``. Each replication draws fresh contexts, logged actions and outcomes
(``simulate(n, days=2, seed=10_000 + r)``); IPS and SNIPS use the logged propensities, DR the world's
exact expected outcomes as q̂ (so DR's remaining error is the outcome and weight noise the intervals
must cover). The truth is each policy's population value, the world's closed forms averaged over
4 × 100,000 contexts (seeds 901–904; its Monte-Carlo error is ~3 % of an interval's half-width at
n = 2,000 and ~10 % at n = 20,000).

Intervals: ``normal`` (delta method), ``skew-corrected`` (Hall's transformation with the estimate's
skewness from mergeable third moments, `estimators.inference.SkewCorrected`) and, for DR, ``arm-pooled`` (the
larger of the empirical and the arm-pooled variance with Cornish–Fisher quantiles, `estimators.armpooled.ArmPooled`; for IPS and SNIPS that
method is the skew-corrected interval, so their rows are not repeated), all from the same sums.

Run from the project root (about 0.16 s per replication at n = 2,000 and 0.9 s at n = 20,000, one process each;
2,000 replications are needed to tell a cell at 93 % from one at 95 %: with 500, a cell covering 95 % reads below
93 % in about 1.5 % of runs, and the page has 63 cells)::

    python docs/experiments/coverage.py --reps 2000 --reps-large 640 --out docs/experiments/coverage.md

(or the two sizes in parallel, about 10 minutes: ``--only 2000`` and ``--only 20000`` with the same arguments, then
``--combine``: the same numbers, every replication's seed is fixed). ``--confirm 2000`` (same arguments) runs a
second set of 2,000 replications at n = 2,000 — replications 2,000–3,999, which played no part in choosing the
arm-pooled interval's quantiles — and ``--combine`` adds it to the page. It writes the markdown table
and, beside it, ``coverage.json`` (every cell's coverage and mean width,
and the interval endpoints of the first replications, which ``tests/integration/test_coverage_table.py``
re-computes).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from estimators import DR, IPS, SNIPS, ArmPooled, Normal, SkewCorrected, SupportWarning
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import simulate
from policies import Cheapest, Mixture, Policy, PriceWeighted

SLA = 10_000.0
DAYS = 2
TRUTH_SEEDS = (901, 902, 903, 904)
TRUTH_ROWS = 100_000
POLICIES = ("cheapest", "balanced", "diff")
ESTIMATORS = (IPS(), SNIPS(), DR())
METHODS = {"normal": Normal(), "skew-corrected": SkewCorrected(), "arm-pooled": ArmPooled()}
SPOT = 2  # replications whose interval endpoints coverage.json keeps for the test


def policies() -> dict[str, Policy]:
    """The two targets, fitted on a reference log."""
    reference = simulate(20_000, days=DAYS, seed=900)
    ds = BanditDataset.from_frames(reference.logs, reference.catalog, sla_latency_ms=SLA)
    return {"cheapest": Mixture(policy=Cheapest().fit(ds), epsilon=0.3, name="cheapest"),
            "balanced": Mixture(policy=PriceWeighted(), epsilon=0.5, name="balanced")}


def truth(pols: dict[str, Policy]) -> dict[str, np.ndarray]:
    """Population value per policy and of the difference, shape (M,) each."""
    out = {name: np.zeros(len(METRICS)) for name in pols}
    for seed in TRUTH_SEEDS:
        sim = simulate(TRUTH_ROWS, days=DAYS, seed=seed)
        ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
        for name, policy in pols.items():
            value = sim.world.true_value(policy.action_probabilities(ds), SLA)
            out[name] += np.array([value[m] for m in METRICS]) / len(TRUTH_SEEDS)
    out["diff"] = out["cheapest"] - out["balanced"]
    return out


def replication(pols: dict[str, Policy], n: int, rep: int) -> dict[tuple[str, str, str], np.ndarray]:
    """(policy, estimator, method) -> (2, M) interval of one replication."""
    sim = simulate(n, days=DAYS, seed=10_000 + rep)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
    fb, q = ds.to_feedback(), sim.world.expected_outcomes(SLA)
    pis = {name: p.action_probabilities(ds) for name, p in pols.items()}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for est in ESTIMATORS:
            paired = est.partial(fb, target=pis["cheapest"], baseline=pis["balanced"], q_hat=q, arm_sums=True)
            alone = est.partial(fb, target=pis["balanced"], q_hat=q, arm_sums=True)
            for method, inference in _methods(est.name).items():
                for policy, part, kind in (("cheapest", paired, "value"), ("diff", paired, "difference"),
                                           ("balanced", alone, "value")):
                    r = est.finalize(part, inference=inference, kind=kind)  # type: ignore[arg-type]
                    out[(policy, est.name, method)] = np.stack([r.ci_low, r.ci_high])
    return out


def _methods(estimator: str) -> dict[str, Normal | SkewCorrected | ArmPooled]:
    """The interval methods scored for an estimator: arm-pooled only for DR (the others would repeat skew-corrected)."""
    return {k: v for k, v in METHODS.items() if k != "arm-pooled" or estimator == "DR"}


def run(n: int, reps: int, pols: dict[str, Policy], true: dict[str, np.ndarray], *, log: bool = True, first: int = 0) -> dict:
    """Coverage and mean width of every cell over the ``reps`` replications from ``first`` on, and the first ``SPOT``
    intervals."""
    hits: dict[tuple[str, str, str], np.ndarray] = {}
    width: dict[tuple[str, str, str], np.ndarray] = {}
    spot: dict[str, list] = {}
    t0 = time.perf_counter()
    for rep in range(first, first + reps):
        for (policy, est, method), ci in replication(pols, n, rep).items():
            key = (policy, est, method)
            hits[key] = hits.get(key, 0) + ((ci[0] <= true[policy]) & (true[policy] <= ci[1]))
            width[key] = width.get(key, 0) + (ci[1] - ci[0])
            if rep - first < SPOT:
                spot.setdefault("|".join(key), []).append(ci.tolist())
        if log and (rep + 1 - first) % 50 == 0:
            print(f"n = {n:,}: {rep + 1 - first} replications ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"n": n, "reps": reps, "first": first, "spot": spot,
            "cells": {"|".join(k): {"coverage": (hits[k] / reps).tolist(), "width": (width[k] / reps).tolist()} for k in hits}}


def _label(res: dict) -> str:
    """The table's n column: the size, and the replications when they do not start at 0 (a confirmation set)."""
    first = res.get("first", 0)
    return f"{res['n']:,}" + (f" (replications {first:,}–{first + res['reps'] - 1:,})" if first else "")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def tables(results: list[dict]) -> str:
    """The markdown: coverage (%) per cell and metric, and the skew-corrected interval's width relative to the normal one."""
    lines = ["| n | policy | estimator | interval | " + " | ".join(METRICS) + " |", "|---|---|---|---|" + "---|" * len(METRICS)]
    for res in results:
        for policy in POLICIES:
            for est in ESTIMATORS:
                for method in _methods(est.name):
                    cov = res["cells"][f"{policy}|{est.name}|{method}"]["coverage"]
                    lines.append(f"| {_label(res)} | {policy} | {est.name} | {method} | " + " | ".join(_pct(c) for c in cov) + " |")
    lines += ["", "Mean width of the skew-corrected (and DR's arm-pooled) interval relative to the normal one (same replications):",
              "", "| n | policy | estimator | interval | " + " | ".join(METRICS) + " |", "|---|---|---|---|" + "---|" * len(METRICS)]
    for res in results:
        for policy in POLICIES:
            for est in ESTIMATORS:
                b = np.array(res["cells"][f"{policy}|{est.name}|normal"]["width"])
                for method in _methods(est.name):
                    if method != "normal":
                        a = np.array(res["cells"][f"{policy}|{est.name}|{method}"]["width"])
                        lines.append(f"| {_label(res)} | {policy} | {est.name} | {method} | " + " | ".join(f"{r:.3f}" for r in a / b) + " |")
    return "\n".join(lines) + "\n"


HEADER = """# How good are the intervals: coverage of the simulator's exact truth

Written by `docs/experiments/coverage.py` (its docstring has the setup). Each cell is the share of
replications (in %) whose 95 % interval holds the policy's exact population value; `diff` is the paired
difference `cheapest − balanced`. The run's default, `[evaluation] inference = "arm-pooled"`, gives DR the
arm-pooled interval (the larger of the empirical and the arm-pooled variance, moved by the Cornish–Fisher
quantiles of its studentized estimate) and the other estimators the skew-corrected one; `inference = "skew"`
gives DR the skew-corrected one too. How the arm-pooled interval was chosen, against the exact conditional
variance and the other candidates: `conditional_variance.md`.

"""


def _write(out: Path, text: str, payload: dict) -> None:
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=500, help="replications at n = 2,000")
    parser.add_argument("--reps-large", type=int, default=40, help="replications at n = 20,000")
    parser.add_argument("--out", default=None, help="markdown file to write (coverage.json beside it)")
    parser.add_argument("--only", type=int, choices=(2_000, 20_000), default=None,
                        help="run one n and write <out>.<n>.json (two processes in parallel; then --combine)")
    parser.add_argument("--combine", action="store_true",
                        help="write <out> from the <out>.<n>.json of --only (and a confirmation set's, when there is one)")
    parser.add_argument("--confirm", type=int, default=0,
                        help="run only a second set of this many replications at n = 2,000, the ones after the first --reps "
                             "(seeds no choice was made on), into <out>.confirm.json; --combine adds it to the page")
    args = parser.parse_args()
    command = f"python docs/experiments/coverage.py --reps {args.reps} --reps-large {args.reps_large}"
    header = HEADER + f"Command: `{command}` ({args.reps} replications at n = 2,000, {args.reps_large} at n = 20,000).\n\n"
    if args.combine:
        out = Path(args.out)
        files = [out.with_suffix(f".{n}.json") for n in (2_000, 20_000)]
        files += [f for f in [out.with_suffix(".confirm.json")] if f.exists()]
        parts = [json.loads(f.read_text()) for f in files]
        results = [p["results"][0] for p in parts]
        if len(parts) > 2:
            confirm = f"{command} --confirm {results[2]['reps']}"
            header += (f"Confirmation set: `{confirm}` ({results[2]['reps']} more replications at n = 2,000, seeds not used "
                       "in choosing the arm-pooled interval's quantiles).\n\n")
        _write(out, header + tables(results), {"command": command, "truth": parts[0]["truth"], "results": results})
        return
    pols = policies()
    true = truth(pols)
    if args.confirm:
        results = [run(2_000, args.confirm, pols, true, first=args.reps)]
        payload = {"command": command, "truth": {k: v.tolist() for k, v in true.items()}, "results": results}
        Path(args.out).with_suffix(".confirm.json").write_text(json.dumps(payload, indent=1) + "\n")
        return
    sizes = [(2_000, args.reps), (20_000, args.reps_large)]
    results = [run(n, reps, pols, true) for n, reps in sizes if args.only in (None, n)]
    payload = {"command": command, "truth": {k: v.tolist() for k, v in true.items()}, "results": results}
    if args.only is not None:
        Path(args.out).with_suffix(f".{args.only}.json").write_text(json.dumps(payload, indent=1) + "\n")
        return
    text = header + tables(results)
    print(text)
    if args.out:
        _write(Path(args.out), text, payload)


if __name__ == "__main__":
    main()
