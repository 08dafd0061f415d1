"""Coverage of the off-policy quantile intervals (p50 … p99 of TTFT, latency, cost, throughput) on the simulator's exact truth.

For each world seed, a simulated log of ``N`` requests fixes a population of contexts (each with its
sample weight) and every (request, arm) outcome distribution; the exact p-quantile of each target
policy's outcome distribution over that population comes from
`ope.simulate.distribution.true_quantiles`. Each replication draws ``N`` contexts afresh from the
population (with replacement, so rows are independent draws from it, as the intervals assume), then
their logged arms (from the logging probabilities) and outcomes, and estimates the target policies'
CDFs exactly as a run does (`estimators.distribution`: a 128-point
log-spaced grid over the replication's own range, IPS and SNIPS, and DR for TTFT and latency with
the world's exact pair CDFs as q̂, Woodruff intervals, paired differences cheapest − balanced with
their delta-method interval). An interval covers when the
exact quantile (or difference of exact quantiles) lies inside it.

The targets are those of ``tests/integration/test_truth.py``: cheapest-eligible with 30 %
exploration and price-weighted balancing half mixed with uniform. Run from the project root
(about 3 minutes per world seed for the exact quantiles and pair CDFs, then about 0.4 s per replication)::

    python docs/experiments/tail_quantiles.py --worlds 4 --reps 250 --out docs/experiments/tail_quantiles.md

``tests/integration/test_tail_quantiles.py`` re-runs the first replications and checks the estimates
this writes under "Replications, as written", and a reduced coverage check against the exact truth.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from estimators.distribution import LEVELS, PolicyRows, accumulate_cdfs, coarse_index, finalize_cdf, quantile_difference
from estimators.grid import Grid
from ope.data.dataset import BanditDataset
from ope.data.facts import DISTRIBUTION_METRICS
from ope.evaluation.distributions import POINTS
from ope.models.spread import SPREAD_METRICS
from ope.simulate import simulate
from ope.simulate.distribution import pair_cdf, true_quantiles
from ope.simulate.generate import draw_logged_arms
from ope.simulate.world import World
from policies import Cheapest, Mixture, PriceWeighted

N, DAYS, SLA = 20_000, 2, 10_000.0
ESTIMATORS = ("IPS", "SNIPS", "DR")
#: DR's q̂ of P(Y ≤ t | x, a): the world's exact pair CDFs on this log-spaced reference grid, interpolated in log t
REFERENCE_MS = np.geomspace(1.0, 1e6, 256)
READING = (
    "Reading it. The truth is each policy's quantile over the world's population of contexts (its simulated log's "
    "requests, with their sample weights), and every replication draws its requests from that population with "
    "replacement, so rows are independent draws as the intervals assume, and the intervals' variance, which counts how "
    "the contexts vary, is the estimate's. IPS's upper p95/p99 ends are often open (its CDF need not reach p + z·se), "
    "which makes them conservative and its half-widths wide. DR (TTFT and latency, the metrics a run estimates by DR) "
    "uses the world's exact P(Y ≤ t | x, a) as q̂, interpolated in log t from a fixed grid (a q̂ fixed before the "
    "replication, so DR stays unbiased): the best a model can do, as `coverage.md` does for means; a run's DR uses the "
    "log-normal spread of its LightGBM models instead.")
FloatArray = npt.NDArray[np.float64]


def targets(sim_seed: int = 900, rows: int = 20_000) -> dict[str, Mixture]:
    """The two target policies (cheapest fitted on a reference log, as in test_truth.py)."""
    reference = simulate(rows, days=DAYS, seed=sim_seed)
    ds = BanditDataset.from_frames(reference.logs, reference.catalog, sla_latency_ms=SLA)
    return {"cheapest": Mixture(policy=Cheapest().fit(ds), epsilon=0.3, name="cheapest"),
            "balanced": Mixture(policy=PriceWeighted(), epsilon=0.5, name="balanced")}


@dataclass
class WorldCase:
    """One world: its simulated log's world, the targets' probabilities and their exact quantiles."""

    world: World
    pis: dict[str, FloatArray]
    truth: dict[tuple[str, str], FloatArray]       # (policy or "difference", metric) -> (L,)
    pair_cdfs: dict[str, FloatArray] = field(default_factory=dict)  # metric -> (pairs, reference thresholds)

    def q_hat(self, metric: str, thresholds: FloatArray) -> FloatArray:
        """(pairs, C) exact P(Y ≤ t) interpolated in log t from the reference grid: a fixed q̂, so DR stays unbiased."""
        f, grid = self.pair_cdfs[metric], np.log(REFERENCE_MS)
        at = np.log(np.maximum(thresholds, REFERENCE_MS[0]))
        j = np.clip(np.searchsorted(grid, at) - 1, 0, grid.size - 2)
        lam = np.clip((at - grid[j]) / (grid[j + 1] - grid[j]), 0.0, 1.0)
        out = f[:, j] * (1 - lam) + f[:, j + 1] * lam
        out[:, thresholds <= 0] = 0.0  # TTFT and latency are positive
        return out


def world_case(seed: int, n: int, policies: dict[str, Mixture], *, truth: tuple[str, ...] = DISTRIBUTION_METRICS,
               dr: bool = False) -> WorldCase:
    """The world of seed ``seed`` with the exact quantiles of the metrics ``truth``, and with ``dr`` the exact pair CDFs
    DR uses as q̂ (TTFT and latency, the metrics a run estimates by DR)."""
    sim = simulate(n, days=DAYS, seed=seed)
    ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
    pis = {name: p.action_probabilities(ds) for name, p in policies.items()}
    exact: dict[tuple[str, str], FloatArray] = {}
    for metric in truth:
        for name, pi in pis.items():
            exact[(name, metric)] = true_quantiles(sim.world, pi, metric, LEVELS)
        exact[("difference", metric)] = exact[("cheapest", metric)] - exact[("balanced", metric)]
    pairs = {m: np.stack([pair_cdf(sim.world, m, float(t)) for t in REFERENCE_MS], axis=1) for m in SPREAD_METRICS} if dr else {}
    return WorldCase(sim.world, pis, exact, pairs)


def outcomes(world: World, rng: np.random.Generator) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], dict[str, FloatArray]]:
    """Contexts drawn with replacement from the world's (their row indices), their logged arms and the four metrics of
    their outcomes (throughput = tokens/s of an ok answer, else 0)."""
    rows = rng.integers(0, world.n, world.n)
    drawn = World(world.spec, world.contexts.take(rows), days=world.days)
    arms = draw_logged_arms(drawn.logging_probabilities, rng)
    out = drawn.draw_outcomes(arms, rng)
    ok = out.status == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        tps = np.where(ok, out.output_tokens * 1000.0 / (out.latency_ms - out.ttft_ms), 0.0)
    return rows, arms, {"ttft_ms": out.ttft_ms, "latency_ms": out.latency_ms, "cost_usd": out.cost_usd, "throughput_tps": tps}


def replicate(case: WorldCase, world_seed: int, rep: int, metrics: tuple[str, ...] = DISTRIBUTION_METRICS) -> list[dict[str, object]]:
    """One replication's estimates of ``metrics``: rows of (policy or difference, metric, estimator, quantile, value, ci_low,
    ci_high, truth)."""
    world = case.world
    rows_i, arms, ys = outcomes(world, np.random.default_rng([world_seed, rep]))
    p = world.logging_probabilities[rows_i, arms]
    w = {name: pi[rows_i, arms] / p for name, pi in case.pis.items()}
    sample_weight = world.sample_weight[rows_i]
    pair_of = world.pair_index[rows_i]  # (n, K) the base world's pair of each drawn row and arm, -1 where ineligible
    out: list[dict[str, object]] = []
    for metric in metrics:
        y = ys[metric]
        grid = Grid.spanning(float(y[y > 0].min()), float(y.max()), points=POINTS, zero=bool((y <= 0).any()))
        weights = {name: PolicyRows(w[name]) for name in case.pis}
        if metric in case.pair_cdfs:
            f = case.q_hat(metric, grid.thresholds[coarse_index(grid.size)])
            f_rows = np.where((pair_of >= 0)[:, :, None], f[np.maximum(pair_of, 0)], 0.0)  # (n, K, C)
            logged = f[pair_of[np.arange(pair_of.shape[0]), arms]]
            weights = {name: PolicyRows(w[name], np.einsum("nk,nkc->nc", pi[rows_i], f_rows), logged)
                       for name, pi in case.pis.items()}
        sums, cross = accumulate_cdfs(grid, y, sample_weight, weights, estimators=ESTIMATORS, baseline="balanced")
        for est in ESTIMATORS:
            if ("cheapest", est) not in sums:
                continue
            dist = {name: finalize_cdf(sums[(name, est)], grid, estimator=est) for name in case.pis}
            diff = quantile_difference(dist["cheapest"], dist["balanced"], cross[("cheapest", est)])
            found = {name: (d.quantiles, d.ci_low, d.ci_high) for name, d in dist.items()} | {"difference": diff}
            for name, (value, low, high) in found.items():
                out += [{"world": world_seed, "rep": rep, "policy": name, "metric": metric, "estimator": est, "quantile": q,
                         "value": float(value[k]), "ci_low": float(low[k]), "ci_high": float(high[k]),
                         "truth": float(case.truth[(name, metric)][k]) if (name, metric) in case.truth else float("nan")}
                        for k, q in enumerate(LEVELS)]
    return out


def outside(rows: list[dict[str, object]], low: float = 93.0, high: float = 97.0) -> str:
    """Which p50/p95 cells fall outside [low, high] %, and the chance of that for an exactly calibrated interval."""
    import polars as pl
    from scipy.stats import binom

    frame = pl.DataFrame(rows).filter(pl.col("quantile").is_in([0.5, 0.95])).with_columns(
        ((pl.col("ci_low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("ci_high"))).alias("covered"))
    cells = frame.group_by(["metric", "estimator", "policy", "quantile"], maintain_order=True).agg(
        (100 * pl.col("covered").mean()).alias("cover"), pl.len().alias("n"))
    n = int(cells["n"].min())
    chance = 1 - (binom.cdf(np.floor(high / 100 * n), n, 0.95) - binom.cdf(np.ceil(low / 100 * n) - 1, n, 0.95))
    lines = []
    for est in ESTIMATORS:
        sub = cells.filter(pl.col("estimator") == est)
        out = sub.filter((pl.col("cover") < low) | (pl.col("cover") > high))
        named = "; ".join(f"{r['metric']} {r['policy']} p{round(100 * r['quantile'])} {r['cover']:.1f}" for r in out.iter_rows(named=True))
        lines.append(f"{est}: {out.height} of {sub.height} p50/p95 cells outside {low:.0f}–{high:.0f} %"
                     + (f" ({named})" if named else "") + ".")
    return (" ".join(lines) + f" An exactly calibrated 95 % interval lands outside {low:.0f}–{high:.0f} % in a cell of {n} "
            f"replications with probability {chance:.3f}, so about {chance * len(cells) / len(ESTIMATORS):.2f} of each "
            "estimator's cells would be outside by chance alone.")


def coverage_table(rows: list[dict[str, object]]) -> str:
    """Markdown: coverage (%) per metric × estimator × policy at each level, and the median relative half-width."""
    import polars as pl

    frame = pl.DataFrame(rows).with_columns(
        ((pl.col("ci_low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("ci_high"))).alias("covered"),
        ((pl.col("ci_high") - pl.col("ci_low")) / 2 / pl.col("truth").abs()).alias("half"))
    lines = ["| metric | estimator | target | " + " | ".join(f"p{round(100 * q)} cover" for q in LEVELS) + " | p50 / p95 half-width |",
             "|---|---|---|" + "---|" * len(LEVELS) + "---|"]
    for (metric, est, policy), sub in frame.group_by(["metric", "estimator", "policy"], maintain_order=True):
        cells = []
        for q in LEVELS:
            at = sub.filter(pl.col("quantile") == q)
            cells.append(f"{100 * at['covered'].mean():.1f}")
        widths = [sub.filter(pl.col("quantile") == q)["half"].median() for q in (0.5, 0.95)]
        width = "—" if policy == "difference" else f"{100 * widths[0]:.1f} % / {100 * widths[1]:.1f} %"
        lines.append(f"| {metric} | {est} | {policy} | " + " | ".join(cells) + f" | {width} |")
    return "\n".join(lines)


def sample_table(rows: list[dict[str, object]]) -> str:
    """Markdown: the SNIPS p50 and p95 estimates of the first two replications, as written (the test recomputes them)."""
    lines = ["| world | rep | policy | metric | quantile | value | ci_low | ci_high |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["estimator"] == "SNIPS" and r["quantile"] in (0.5, 0.95) and r["policy"] == "cheapest" and r["metric"] in ("ttft_ms", "latency_ms"):
            lines.append(f"| {r['world']} | {r['rep']} | {r['policy']} | {r['metric']} | {r['quantile']} | {r['value']:.6g} | "
                         f"{r['ci_low']:.6g} | {r['ci_high']:.6g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--out")
    args = parser.parse_args()
    t0 = time.perf_counter()
    policies = targets()
    rows: list[dict[str, object]] = []
    first: list[dict[str, object]] = []
    for world_seed in range(1, args.worlds + 1):
        case = world_case(world_seed, args.n, policies, dr=True)
        print(f"world {world_seed}: exact quantiles in {time.perf_counter() - t0:.0f} s", flush=True)
        for rep in range(args.reps):
            found = replicate(case, world_seed, rep)
            rows += found
            if world_seed == 1 and rep < 2:
                first += found
    text = (f"# Off-policy quantiles against the exact truth\n\nWritten by `python docs/experiments/tail_quantiles.py --worlds "
            f"{args.worlds} --reps {args.reps}` ({args.worlds} simulated worlds × {args.reps} replications = "
            f"{args.worlds * args.reps} logs of n = {args.n:,}, {time.perf_counter() - t0:.0f} s). Coverage in % of the 95 % "
            "intervals (Woodruff for each policy's quantile, delta method for the paired difference cheapest − balanced); "
            "half-width relative to the true quantile, median over replications. With "
            f"{args.worlds * args.reps} replications a coverage of 95 % is measured within about ±"
            f"{100 * 1.96 * (0.95 * 0.05 / (args.worlds * args.reps)) ** 0.5:.1f} points.\n\n"
            f"{coverage_table(rows)}\n\n{READING} {outside(rows)}\n\n## Replications, as written\n\n{sample_table(first)}\n")
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
