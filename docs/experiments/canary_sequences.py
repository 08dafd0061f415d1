"""How soon `ope monitor`'s confidence sequences decide, and how often they decide wrongly, on the simulator.

The Qwen3-32B market (`ope.simulate.scenarios`), one week of 60,000 requests (seed 0); each seed draws
a fresh canary from it: a share s of requests routed by the candidate, the rest by direct official
access, the propensity of the mixture logged (as `ope.simulate.canary` does). Peeks are hourly: a
sequence *decides* at the first hour's end where its interval excludes 0.

- **Detection.** The candidate mixes direct official access with cheapest routing in the proportion
  whose exact cost change equals the Qwen3 example's published one (``published.json``: the routed
  rule's DR cost change, written by ``make_published.py``), so the size tracks the example. Requests
  until the cost difference's upper bound falls below 0, at shares 5, 10, 20 and 30 %.
- **Equal policies** (any decision is false). *Equal on every metric*: uniform routing against a
  policy routing each request to one eligible arm drawn at random (20,000 requests, 2 days), as
  before. *Equal cost, heavy weights*: each request gets the mix of its cheapest and its most
  expensive eligible arm whose exact expected cost equals the official arm's, so every request's
  cost difference is 0 in expectation while weights reach 1/s and costs have the market's long tail;
  here only cost decisions are false (its SLA hit rate truly differs).
- **Sequences.** *two-sided EB*: the sequence `ope monitor` used before (`estimators.sequence`, each
  term rescaled to [0, 1] by its whole range, bet ≤ 1/2); *one-sided EB*: `estimators.canary.CanaryCS`
  now (`estimators.onesided`), with IPS terms or doubly robust terms whose q̂ is the world's exact
  expectation (the best any predictable model can do); *asymptotic*: the Gaussian-mixture asymptotic CS
  of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024) on the same terms, tuned for 10⁴ requests —
  measured only to show why it is not used: it needs no range, and decides wrongly far more than α.
- **Bounds.** Cost cap h = 0.12 USD, the largest cost any request of this market can have (context ×
  the larger per-token price of its dearest endpoint, 131,072 × 0.90 USD per Mtok); the verdict level
  α = 5 %, each metric's sequence at α/2 (each side at α/4) as `ope monitor` uses them.

Run from the project root (about 2.5 minutes on one core)::

    python docs/experiments/canary_sequences.py --detect-seeds 200 --out docs/experiments/canary_sequences.md

It prints, and with ``--out`` writes, the tables, and saves every number and per-seed result in
``canary_sequences.json`` beside it; ``tests/integration/test_canary_sequences.py`` re-runs a few
seeds and checks they give the saved results and that the README quotes the saved numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from estimators.canary import CanaryCS
from estimators.sequence import EmpiricalBernsteinCS, SequenceState
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.simulate import scenario_spec, simulate
from ope.simulate.generate import SimulatedLog, draw_logged_arms
from policies.baselines import Cheapest, DirectOfficial

COST, SLA = METRICS.index("cost_usd"), METRICS.index("sla_hit")
CAP, ALPHA, SLA_MS = (0.12, 1.0), 0.05, 10_000.0
PUBLISHED = Path(__file__).with_name("published.json")
SHARES = (0.05, 0.10, 0.20, 0.30)
METHODS = ("two-sided EB", "one-sided EB, IPS", "one-sided EB, DR")
NULL_METHODS = (*METHODS, "asymptotic, IPS", "asymptotic, DR")
Canary = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # w1, w0, r (n, 2), (q̂ logged, q̂ π1, q̂ π0) stacked


class Market:
    """The world, its hourly peek rows, both detection policies and the exact expectations of cost and SLA hit."""

    def __init__(self, rows: int, days: float) -> None:
        self.sim: SimulatedLog = simulate(rows, days, 0, spec=scenario_spec("qwen3-32b"))
        world = self.sim.world
        ds = BanditDataset.from_frames(self.sim.logs, self.sim.catalog, sla_latency_ms=SLA_MS)
        self.official = DirectOfficial(fallback="cheapest").fit(ds).action_probabilities(ds)
        self.cheapest = Cheapest().fit(ds).action_probabilities(ds)
        self.q = np.clip(world.expected_outcomes(SLA_MS)[:, :, [COST, SLA]], 0.0, CAP)
        cut = self.truth(self.cheapest)[0] / self.truth(self.official)[0] - 1
        mix = example_cost_change() / cut
        self.candidate = (1 - mix) * self.official + mix * self.cheapest
        hours = self.sim.logs["ts"].dt.epoch("s").to_numpy() // 3600
        self.peeks = np.append(np.flatnonzero(np.diff(hours)), world.n - 1)

    def truth(self, pi: np.ndarray) -> tuple[float, float]:
        value = self.sim.world.true_value(pi, SLA_MS)
        return value["cost_usd"], value["sla_hit"]

    def equal_cost(self) -> np.ndarray:
        """Per request, the cheapest/dearest eligible mix whose expected cost is the official arm's."""
        qc = np.where(self.sim.world.eligible, self.q[:, :, 0], -np.inf)
        rows = np.arange(qc.shape[0])
        dear = np.zeros_like(self.official)
        dear[rows, qc.argmax(axis=1)] = 1.0
        q_dear, q_cheap = qc.max(axis=1), (self.cheapest * self.q[:, :, 0]).sum(axis=1)
        q_official = (self.official * self.q[:, :, 0]).sum(axis=1)
        theta = np.clip((q_dear - q_official) / np.maximum(q_dear - q_cheap, 1e-15), 0.0, 1.0)
        return theta[:, None] * self.cheapest + (1 - theta[:, None]) * dear

    def canary(self, pi1: np.ndarray, pi0: np.ndarray, share: float, rng: np.random.Generator) -> Canary:
        world, rows = self.sim.world, np.arange(self.sim.world.n)
        mix = (1 - share) * pi0 + share * pi1
        arms = draw_logged_arms(mix, rng)
        out = world.draw_outcomes(arms, rng)
        r = np.column_stack([out.cost_usd, (out.status_names == "ok") & (out.latency_ms <= SLA_MS)]).astype(float)
        assert r[:, 0].max() <= CAP[0], r[:, 0].max()
        q = np.stack([self.q[rows, arms], np.einsum("nk,nkm->nm", pi1, self.q), np.einsum("nk,nkm->nm", pi0, self.q)])
        return pi1[rows, arms] / mix[rows, arms], pi0[rows, arms] / mix[rows, arms], r, q


def example_cost_change() -> float:
    """The Qwen3 example's published cost change of its routed rule (DR, relative): the detection candidate's size."""
    return float(json.loads(PUBLISHED.read_text())["qwen3_32b.routed.cost_usd.relative"]["dr"]) / 100


def _two_sided(c: Canary, share: float) -> tuple[np.ndarray, np.ndarray]:
    """The difference sequence `ope monitor` used before: terms rescaled by their whole range, PrPl-EB at α/2."""
    w1, w0, r, _ = c
    high = np.asarray(CAP)
    low, top = -high / (1 - share), high / share
    scaled = np.clip(((w1 - w0)[:, None] * r - low) / (top - low), 0.0, 1.0)
    _, b = EmpiricalBernsteinCS(alpha=ALPHA / 2).update(SequenceState.start(2), scaled)
    return low + b.low * (top - low), low + b.high * (top - low)


def _one_sided(c: Canary, share: float, dr: bool) -> tuple[np.ndarray, np.ndarray]:
    w1, w0, r, q = c
    cs = CanaryCS(alpha=ALPHA / 2, share=share, metric_high=CAP, doubly_robust=dr)
    _, b = cs.update(cs.start(), weight=w1, baseline_weight=w0, outcomes=r, q_hat=(q[0], q[1], q[2]) if dr else None)
    return b.difference


def _asymptotic(c: Canary, dr: bool, t_star: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """μ̂_t ± σ̂_t √(2(tρ² + 1)/(t²ρ²) · log(√(tρ² + 1)/α)), ρ² tuned for t* (Waudby-Smith et al. 2024, Thm 2.2)."""
    w1, w0, r, q = c
    x = q[1] - q[2] + (w1 - w0)[:, None] * (r - q[0]) if dr else (w1 - w0)[:, None] * r
    a = ALPHA / 2
    t = np.arange(1, len(x) + 1, dtype=np.float64)[:, None]
    mean = np.cumsum(x, axis=0) / t
    sd = np.sqrt(np.maximum(np.cumsum(x**2, axis=0) / t - mean**2, 0.0))
    rho2 = (-2 * math.log(a) + math.log(-2 * math.log(a) + 1)) / t_star
    margin = sd * np.sqrt(2 * (t * rho2 + 1) / (t**2 * rho2) * np.log(np.sqrt(t * rho2 + 1) / a))
    return mean - margin, mean + margin


def sequences(c: Canary, share: float, methods: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(low, high) of the difference, (n, 2) each (cost, SLA hit), per method."""
    make: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "two-sided EB": lambda: _two_sided(c, share), "one-sided EB, IPS": lambda: _one_sided(c, share, False),
        "one-sided EB, DR": lambda: _one_sided(c, share, True), "asymptotic, IPS": lambda: _asymptotic(c, False),
        "asymptotic, DR": lambda: _asymptotic(c, True)}
    return {m: make[m]() for m in methods}


def first_peek(mask: np.ndarray, peeks: np.ndarray) -> int | None:
    """Requests seen at the first hourly peek where ``mask`` holds, or None."""
    hit = mask[peeks]
    return int(peeks[np.argmax(hit)] + 1) if hit.any() else None


def detect(market: Market, share: float, seed: int) -> dict[str, list[int | None]]:
    """Requests until each method's cost upper bound is below 0 (cheaper), and until its SLA upper bound is (worse on
    SLA: this policy's SLA hit rate is truly lower), for the candidate sized to the example's cut at ``share``."""
    c = market.canary(market.candidate, market.official, share, np.random.default_rng(seed))
    return {m: [first_peek(hi[:, j] < 0, market.peeks) for j in (0, 1)] for m, (_, hi) in sequences(c, share, METHODS).items()}


def false_decision(market: Market, kind: str, seed: int, share: float = 0.05) -> dict[str, int | None]:
    """Requests until each method decides anything false under equal policies (None: never)."""
    rng = np.random.default_rng(1_000 + seed)
    if kind == "equal on every metric":
        uniform = market.sim.world.eligible / market.sim.world.eligible.sum(axis=1, keepdims=True)
        pick = draw_logged_arms(uniform, rng)
        pi1, pi0 = np.zeros_like(uniform), uniform
        pi1[np.arange(len(pick)), pick] = 1.0
        columns = [0, 1]
    else:
        pi1, pi0, columns = market.equal_cost(), market.official, [0]
    c = market.canary(pi1, pi0, share, rng)
    return {m: first_peek(((lo[:, columns] > 0) | (hi[:, columns] < 0)).any(axis=1), market.peeks)
            for m, (lo, hi) in sequences(c, share, NULL_METHODS).items()}


def floor(share: float, delta: float) -> float:
    """Requests any valid sequence needs for a median detection: log(1/(2α')) · h / (s · Δ), α' = α/4 (README)."""
    return math.log(1 / (2 * ALPHA / 4)) * CAP[0] / (share * delta)


def _stats(found: list[int | None], rows: int) -> dict[str, object]:
    values = np.array([rows + 1 if f is None else f for f in found])
    return {"median": float(np.median(values)), "p90": float(np.quantile(values, 0.9)), "max": int(values.max()),
            "missed": sum(f is None for f in found)}


def run(detect_seeds: int, null_seeds: int) -> dict[str, object]:
    """Every number of the page."""
    big, small = Market(60_000, 7), Market(20_000, 2)
    (c1, s1), (c0, s0) = big.truth(big.candidate), big.truth(big.official)
    out: dict[str, object] = {"truth": {"cost_cut_usd": c0 - c1, "cost_cut_relative": c1 / c0 - 1, "sla_difference": s1 - s0},
                              "detection": {}, "false": {}, "floor": {}}
    for share in SHARES:
        runs = [detect(big, share, seed) for seed in range(detect_seeds)]
        out["detection"][str(share)] = {
            m: {metric: _stats([r[m][j] for r in runs], big.sim.world.n) | {"seeds": [r[m][j] for r in runs]}
                for j, metric in enumerate(("cost", "sla"))} for m in METHODS}
        out["floor"][str(share)] = floor(share, c0 - c1)
    for kind, market in (("equal on every metric", small), ("equal cost, heavy weights", small)):
        runs = [false_decision(market, kind, seed) for seed in range(null_seeds)]  # seeds 1000, 1001, ...
        out["false"][kind] = {m: {"false": sum(r[m] is not None for r in runs), "seeds": null_seeds,
                                  "first": [r[m] for r in runs]} for m in NULL_METHODS}
    return out


def _n(value: float) -> str:
    return f"{value:,.0f}"


def tables(out: dict[str, object]) -> str:
    """The page's markdown tables."""
    truth = out["truth"]
    intro = (f"Detection of a {-100 * truth['cost_cut_relative']:.0f} % cost cut ({1000 * truth['cost_cut_usd']:.2f} mUSD per "
             f"request) whose SLA hit rate is {-truth['sla_difference']:.3f} lower: requests until the cost difference's upper "
             "bound is below 0 (cheaper), and until the SLA difference's is (worse on SLA), at hourly peeks; median and 90th "
             "percentile over seeds (a seed not decided within 60,000 requests counts 60,001).")
    head = "| canary share | sequence | cheaper: median | cheaper: 90th pct | worse on SLA: median | worse on SLA: 90th pct |"
    lines = [intro, "", head, "|---|---|---|---|---|---|"]
    for share, by_method in out["detection"].items():
        for method, st in by_method.items():
            c, s = st["cost"], st["sla"]
            lines.append(f"| {100 * float(share):.0f} % | {method} | {_n(c['median'])} | {_n(c['p90'])} | {_n(s['median'])} | "
                         f"{_n(s['p90'])} |")
        lines.append(f"| {100 * float(share):.0f} % | *floor for any valid sequence* | {_n(out['floor'][share])} | | | |")
    kinds = list(out["false"])
    lines += ["", "False decisions with hourly peeks when the policies are equal (α = 5 %):", "",
              "| sequence | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for method in NULL_METHODS:
        cells = [out["false"][k][method] for k in kinds]
        lines.append(f"| {method} | " + " | ".join(f"{c['false']} of {c['seeds']} ({100 * c['false'] / c['seeds']:.1f} %)"
                                                   for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detect-seeds", type=int, default=200)
    parser.add_argument("--null-seeds", type=int, default=200)
    parser.add_argument("--out", type=Path, help="write the markdown page here and canary_sequences.json beside it")
    args = parser.parse_args()
    start = time.perf_counter()
    out = run(args.detect_seeds, args.null_seeds)
    text = tables(out)
    print(text)
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.out is not None:
        page = args.out.read_text() if args.out.exists() else "<!-- tables -->\n<!-- /tables -->\n"
        head, rest = page.split("<!-- tables -->", 1)
        page = head + "<!-- tables -->\n\n" + text + "\n\n<!-- /tables -->" + rest.split("<!-- /tables -->", 1)[1]
        args.out.write_text(page)
        args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
