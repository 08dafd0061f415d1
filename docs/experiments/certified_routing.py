"""Certified against uncertified constrained routing, scored on the simulator's exact truth.

For each seed: simulate a Qwen3-32B market log (`ope.simulate.scenarios.qwen3_32b_spec`), cross-fit
LightGBM outcome models on it (q̂ is then biased exactly the way LightGBM's is: it overrates some
arms' satisfaction and SLA hit), and fit the constrained router twice through the run's own code
(`ope.evaluation.certify.fit_cross_fitted`): with ``certify = true`` and with ``certify = false``.
For each, the exact truth (`World.true_value`) of

- the **deployed** rule (fitted on every row) routing the log's requests, and
- the **evaluated** probabilities (each request routed by the fold copy that never saw it, what
  `ope run` evaluates and writes to ``actions/``), with the DR 95 % interval of the latter and
  whether it covers their truth, metric by metric: by the run's interval method (``--inference``: arm-pooled,
  `ope run`'s default, or skew-corrected; the certification's bounds use it too), and also normal and arm-pooled.

Run from the project root (about 30 s per seed on one core at the defaults)::

    python docs/experiments/certified_routing.py --seeds 200 --first-seed 1000 --rows 10000 --jobs 2 --out docs/experiments/certified_routing.md

(``--inference skew`` gives the skew-corrected run, the default before the arm-pooled interval.)

It prints, and with ``--out`` writes, the markdown tables quoted in the README (an existing page keeps its
hand-written "## Reading" section, to be re-read against the new numbers), and
``tests/integration/test_certified_routing.py`` (slow) checks the same claims at a smaller size.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from estimators import DR, ArmPooled, Estimate, SupportWarning
from estimators.inference import Normal, SkewCorrected
from ope.config import EvaluationConfig
from ope.data.dataset import BanditDataset
from ope.evaluation.batch import BatchRows
from ope.evaluation.certify import fit_cross_fitted
from ope.models.predictors import PredictorConfig, fit_outcome_models
from ope.simulate import simulate
from ope.simulate.scenarios import qwen3_32b_spec
from policies import DirectOfficial, PolicyError
from policies.constrained import ConstrainedRouter

SLA = 10_000.0
MIN_SATISFACTION, MIN_SLA_HIT = 0.70, 0.65
INFERENCE = {"skew": SkewCorrected(), "arm-pooled": ArmPooled()}
DEFAULT = EvaluationConfig().inference  # the run's default interval method
#: interval methods scored on the paired difference against direct official access
DIFF_METHODS = {"arm-pooled": ArmPooled(), "skew-corrected": SkewCorrected(), "normal": Normal()}
COVERED = ("cost_usd", "success", "satisfaction", "sla_hit", "throughput_tps", "ttft_ms", "latency_ms")


@dataclass
class SeedResult:
    """One seed: per variant ("certified", "uncertified") the truth of the deployed rule and of the evaluated
    probabilities, DR of the latter with its interval, and the certificate's status."""

    seed: int
    official_cost: float
    truth: dict[str, dict[str, float]] = field(default_factory=dict)
    truth_evaluated: dict[str, dict[str, float]] = field(default_factory=dict)
    covered: dict[str, dict[str, bool]] = field(default_factory=dict)  # by the run's interval method
    covered_normal: dict[str, dict[str, bool]] = field(default_factory=dict)
    covered_pooled: dict[str, dict[str, bool]] = field(default_factory=dict)
    #: the paired difference evaluated − direct official access, per variant and interval method
    covered_diff: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


def router(certify: bool, max_rows: int | None) -> ConstrainedRouter:
    return ConstrainedRouter(name="routed", min_satisfaction=MIN_SATISFACTION, min_sla_hit=MIN_SLA_HIT, exploration=0.02,
                             certify=certify, max_rows=max_rows)


def run_seed(seed: int, rows: int, *, folds: int = 5, max_rows: int | None = None, inference: str = DEFAULT) -> SeedResult:
    """Simulate, cross-fit q̂, fit both routers and score them on the exact truth; ``inference`` the run's interval
    method ("arm-pooled", the default, or "skew", as `[evaluation] inference`)."""
    method = INFERENCE[inference]
    sim = simulate(rows, days=7, seed=seed, spec=qwen3_32b_spec())
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
    q = fit_outcome_models(ds, PredictorConfig(folds=folds), show_progress=False).q_hat
    batch = BatchRows(ds, ds.to_feedback(), q)
    official = DirectOfficial(fallback="cheapest").fit(ds).action_probabilities(ds)
    official_truth = sim.world.true_value(official, SLA)
    out = SeedResult(seed, official_truth["cost_usd"])
    for label, certify in (("certified", True), ("uncertified", False)):
        policy = router(certify, max_rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", SupportWarning)
            try:
                evaluated, cert = fit_cross_fitted(policy, batch, folds, inference=method)
            except PolicyError as exc:  # targets unreachable on this seed's q̂
                out.status[label] = f"infeasible: {str(exc).splitlines()[-1]}"
                continue
            pi = evaluated.action_probabilities(ds, q)
            dr = DR()  # one paired pass: the evaluated value and its difference from direct official access
            paired = dr.partial(batch.feedback, target=pi, baseline=official, q_hat=q, arm_sums=True)
            run, normal, pooled = (dr.finalize(paired, inference=i, kind="value") for i in (method, Normal(), ArmPooled()))
            diffs = {name: dr.finalize(paired, inference=i, kind="difference") for name, i in DIFF_METHODS.items()}
        out.status[label] = "uncertified" if cert is None else cert.status
        out.truth[label] = sim.world.true_value(policy.action_probabilities(ds, q), SLA)
        out.truth_evaluated[label] = truth = sim.world.true_value(pi, SLA)
        for into, est in ((out.covered, run), (out.covered_normal, normal), (out.covered_pooled, pooled)):
            into[label] = _covers(est, truth, ds.metrics)
        gap = {m: truth[m] - official_truth[m] for m in COVERED}
        out.covered_diff[label] = {name: _covers(est, gap, ds.metrics) for name, est in diffs.items()}
    return out


def _covers(est: Estimate, truth: dict[str, float], metrics: tuple[str, ...]) -> dict[str, bool]:
    """Per covered metric, whether the estimate's interval holds the truth."""
    return {m: bool(est.ci_low[j] <= truth[m] <= est.ci_high[j]) for j, m in enumerate(metrics) if m in COVERED}


def _share(values: list[bool]) -> str:
    return f"{sum(values)}/{len(values)} ({100 * sum(values) / max(len(values), 1):.0f} %)"


def tables(results: list[SeedResult], inference: str = DEFAULT) -> str:
    """The markdown tables: targets met in truth, cost against official, and DR coverage (``inference`` the run's)."""
    lines = [f"Targets: satisfaction ≥ {MIN_SATISFACTION}, SLA hit ≥ {MIN_SLA_HIT}; {len(results)} seeds "
             f"({', '.join(str(r.seed) for r in results[:3])}, ...).", "",
             "| router | fitted | true satisfaction ≥ target | true SLA hit ≥ target | both | mean true satisfaction | "
             "mean true SLA hit | true cost / official (mean) | certified |", "|---|---|---|---|---|---|---|---|---|"]
    for label in ("certified", "uncertified"):
        for which, get in (("deployed rule", lambda r: r.truth), ("evaluated (cross-fitted)", lambda r: r.truth_evaluated)):
            ok = [r for r in results if label in get(r)]
            sat = [get(r)[label]["satisfaction"] >= MIN_SATISFACTION for r in ok]
            sla = [get(r)[label]["sla_hit"] >= MIN_SLA_HIT for r in ok]
            cost = np.mean([get(r)[label]["cost_usd"] / r.official_cost for r in ok]) if ok else float("nan")
            certified = sum(r.status.get(label) == "certified" for r in results)
            lines.append(f"| {label} | {which} | {_share(sat)} | {_share(sla)} | {_share([a and b for a, b in zip(sat, sla)])} | "
                         f"{np.mean([get(r)[label]['satisfaction'] for r in ok]):.4f} | "
                         f"{np.mean([get(r)[label]['sla_hit'] for r in ok]):.4f} | {cost:.3f} | "
                         f"{certified if label == 'certified' else '–'}/{len(results)} |")
    lines += ["", "DR 95 % interval of the evaluated (cross-fitted) probabilities against their exact truth:", "",
              "| router | interval | " + " | ".join(COVERED) + " |", "|---|---|" + "---|" * len(COVERED)]
    for label in ("certified", "uncertified"):
        rows = [(f"{INFERENCE[inference].name} (the run's{', its default' if inference == DEFAULT else ''})", lambda r: r.covered),
                ("normal", lambda r: r.covered_normal)]
        if inference != "arm-pooled":
            rows.append(("arm-pooled", lambda r: r.covered_pooled))
        for method, get in rows:
            ok = [r for r in results if label in get(r)]
            lines.append(f"| {label} | {method} | " + " | ".join(_share([get(r)[label][m] for r in ok]) for m in COVERED) + " |")
    lines += ["", ("DR 95 % interval of the paired difference evaluated − direct official access (the baseline a run reports "
                   "against) against the difference of their exact truths:"), "",
              "| router | interval | " + " | ".join(COVERED) + " |", "|---|---|" + "---|" * len(COVERED)]
    for label in ("certified", "uncertified"):
        for method in DIFF_METHODS:
            ok = [r for r in results if label in r.covered_diff]
            lines.append(f"| {label} | {method} | " + " | ".join(_share([r.covered_diff[label][method][m] for r in ok])
                                                                for m in COVERED) + " |")
    infeasible = [f"{r.seed} {label}: {s}" for r in results for label, s in r.status.items() if s.startswith("infeasible")]
    return "\n".join(lines + ([""] + [f"- {x}" for x in infeasible] if infeasible else [])) + "\n"


HEADER = """# Certified constrained routing against the exact truth

Written by `docs/experiments/certified_routing.py` (see its docstring for the method): per seed, a
simulated Qwen3-32B market log, LightGBM q̂ cross-fitted on it (5 folds), and the constrained router
(cost objective, satisfaction ≥ 0.70, SLA hit ≥ 0.65, exploration 0.02) fitted through the run's own
code with `certify = true` and with `certify = false`. "Deployed rule": the router fitted on every
row, routing the log's requests; "evaluated": each request routed by the fold copy that never saw
it (what `ope run` evaluates and writes to `actions/`); each copy is tightened until its bounds on the
other folds' rows meet the targets, the deployed rule until its bounds on every row do. "Certified"
counts seeds whose certificate says every target's 97.5 % DR bound (of the evaluated copies, on every
row) met it; where it did not (the bounds of 10,000 requests are wide), the router is still deployed
at the strictest targets it met.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--max-rows", type=int, default=None, help="the router's max_rows (LP sample)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once")
    parser.add_argument("--inference", choices=sorted(INFERENCE), default=DEFAULT,
                        help="the run's interval method, which the certification's bounds use too")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    t0, results = time.perf_counter(), []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(partial(run_seed, rows=args.rows, max_rows=args.max_rows, inference=args.inference), seeds):
            results.append(result)
            print(f"seed {result.seed}: {result.status} ({time.perf_counter() - t0:.0f} s)", flush=True)
    text = HEADER + (f"Command: `python docs/experiments/certified_routing.py --seeds {args.seeds} --first-seed {args.first_seed} "
            f"--rows {args.rows}" + (f" --max-rows {args.max_rows}" if args.max_rows else "")
            + (f" --inference {args.inference}" if args.inference != DEFAULT else "") + "`\n\n" + tables(results, args.inference))
    print(text)
    if args.out:
        write_page(Path(args.out), text)


def write_page(path: Path, text: str) -> None:
    """Write the tables to ``path``, keeping the page's hand-written "## Reading" section (the interpretation of the
    numbers, to be re-read whenever they change) if it has one."""
    old = path.read_text() if path.exists() else ""
    reading = old[old.index("\n## Reading"):] if "\n## Reading" in old else ""
    path.write_text(text.rstrip("\n") + "\n" + reading)


if __name__ == "__main__":
    main()
