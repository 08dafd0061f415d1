"""Re-run both published-counterfactual examples and write every number the docs quote.

For ``configs/examples/qwen3_32b.toml`` and ``configs/examples/deepseek_v3_2.toml``: ``ope run
--no-tracking`` into a temporary folder, the exact truth of each policy's evaluated probabilities
(read back from ``actions/<policy>.parquet``) from the world rebuilt with the logs' seed, and

- the tables of ``docs/experiments/published_counterfactuals.md`` (between its ``<!-- tables:NAME -->`` and
  ``<!-- end:NAME -->`` markers): per example, truth and every estimator with its interval (✗ where the
  interval misses the truth), and the declared targets with their verdicts and truth;
- ``docs/experiments/published.json``: the headline numbers the README and
  ``docs/experiments/published_counterfactuals.md`` quote, which
  ``tests/integration/test_published.py`` (slow) re-computes and compares.

Run from the project root (about three minutes on 2 cores)::

    python docs/experiments/make_published.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ope.cli import main as ope_main

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the repository (configs/examples, logs/examples)
from ope.simulate import simulate
from ope.simulate.scenarios import scenario_spec

HERE = Path(__file__).parent
#: example → (scenario, SLA in ms, metrics tabulated, the policies in table order)
EXAMPLES = {
    "qwen3_32b": ("qwen3-32b", 10_000.0, ("cost_usd", "satisfaction", "sla_hit", "throughput_tps"),
                  ("direct_official", "routed", "mess_plus", "cheapest")),
    "deepseek_v3_2": ("deepseek-v3.2", 30_000.0, ("throughput_tps", "cost_usd", "satisfaction", "sla_hit"),
                      ("direct_official", "routed", "fastest")),
}
ROWS, DAYS, SEED = 25_000, 7, 20251001
ESTIMATORS = ("DR", "IPS", "SNIPS", "DM")


def run_example(name: str, out: Path) -> tuple[pl.DataFrame, dict[str, Any], dict[str, dict[str, float]]]:
    """``ope run`` of one example: its estimates, summary and the exact truth of every policy's evaluated probabilities."""
    scenario, sla, _, _ = EXAMPLES[name]
    config = PROJECT_ROOT / "configs" / "examples" / f"{name}.toml"
    code = ope_main(["run", str(config), "--out", str(out), "--run-name", name, "--quiet", "--no-tracking", "--overwrite"])
    if code != 0:
        raise SystemExit(f"ope run {config} failed with status {code}")
    folder = out / name
    estimates = pl.read_csv(folder / "estimates.csv")
    info = json.loads((folder / "summary.json").read_text())
    sim = simulate(ROWS, DAYS, SEED, spec=scenario_spec(scenario))
    world, index = sim.world, pl.DataFrame({"request_id": sim.logs["request_id"], "row": np.arange(sim.logs.height)})
    truth = {}
    for policy, path in info["actions"].items():
        actions = pl.read_parquet(folder / path).join(index, on="request_id", how="left", maintain_order="left")
        rows = actions["row"].to_numpy()
        pi = np.zeros((world.n, world.n_arms))
        pi[rows, world.arm_index(actions["arm"].to_list())] = actions["probability"].to_numpy()
        truth[policy] = world.true_value(pi, sla)
    return estimates, info, truth


def _pick(est: pl.DataFrame, policy: str, metric: str, estimator: str, kind: str) -> dict[str, float]:
    row = est.filter((pl.col("policy") == policy) & (pl.col("metric") == metric) & (pl.col("estimator") == estimator)
                     & (pl.col("kind") == kind))
    return row.select("value", "ci_low", "ci_high").row(0, named=True) if row.height else {}


def _cell(r: dict[str, float], truth: float, metric: str, relative: bool) -> str:
    if not r:
        return "–"
    scale, fmt = (1000.0, "{:.4f}") if metric == "cost_usd" and not relative else (1.0, "{:+.1f} %" if relative else
                                                                                   "{:.1f}" if metric == "throughput_tps" else "{:.4f}")
    text = " ".join([fmt.format(r["value"] * scale), f"[{fmt.format(r['ci_low'] * scale)}, {fmt.format(r['ci_high'] * scale)}]"])
    return text + (" ✗" if not r["ci_low"] <= truth <= r["ci_high"] else "")


def table(name: str, est: pl.DataFrame, truth: dict[str, dict[str, float]]) -> list[str]:
    """Truth beside every estimator, per policy and metric, with the paired change vs direct official."""
    _, _, metrics, policies = EXAMPLES[name]
    lines = ["| policy | metric | truth | " + " | ".join(ESTIMATORS) + " |", "|---|---|---|" + "---|" * len(ESTIMATORS)]
    base = truth["direct_official"]
    for policy in policies:
        for metric in metrics:
            for relative in (False, True) if policy != "direct_official" else (False,):
                t = truth[policy][metric]
                if relative:
                    t = 100 * (t / base[metric] - 1)
                label = f"{metric}{' vs official' if relative else ' (mUSD)' if metric == 'cost_usd' else ''}"
                shown = f"{t:+.1f} %" if relative else f"{t * 1000:.4f}" if metric == "cost_usd" else (
                    f"{t:.1f}" if metric == "throughput_tps" else f"{t:.4f}")
                cells = [_cell(_pick(est, policy, metric, e, "relative" if relative else "value"), t, metric, relative)
                         for e in ESTIMATORS]
                lines.append(f"| {policy} | {label} | **{shown}** | " + " | ".join(cells) + " |")
    return lines


def target_table(info: dict[str, Any], truth: dict[str, dict[str, float]]) -> list[str]:
    """Each declared target: DR with its interval and verdict, the router's certificate, and the truth."""
    certs = {(n, t["key"]): t for n, c in info["certification"].items() for t in c["targets"]}
    lines = ["| policy | target | solved for | DR [95 %] | verdict | truth | met in truth |", "|---|---|---|---|---|---|---|"]
    for t in info["targets"]:
        c = certs.get((t["policy"], t["key"]))
        real = truth[t["policy"]][t["metric"]]
        met = real >= t["target"] if t["relation"] == ">=" else real <= t["target"]
        lines.append(f"| {t['policy']} | {t['metric']} {t['relation']} {t['target']:g} | {c['solved_at']:.4g} | "
                     if c else f"| {t['policy']} | {t['metric']} {t['relation']} {t['target']:g} | – | ")
        lines[-1] += (f"{t['estimate']:.4g} [{t['ci'][0]:.4g}, {t['ci'][1]:.4g}] | {t['verdict']} | {real:.4g} | "
                      f"{'yes' if met else 'no'} |")
    return lines


def headlines(results: dict[str, tuple[pl.DataFrame, dict[str, Any], dict[str, dict[str, float]]]]) -> dict[str, Any]:
    """The numbers the README and published_counterfactuals.md quote (relative changes in %, DR with its interval)."""
    out: dict[str, Any] = {}
    for name, (est, info, truth) in results.items():
        key_metric = "cost_usd" if name == "qwen3_32b" else "throughput_tps"
        routers = ("routed", "mess_plus") if name == "qwen3_32b" else ("routed",)
        for policy in routers:
            dr = _pick(est, policy, key_metric, "DR", "relative")
            out[f"{name}.{policy}.{key_metric}.relative"] = {
                "dr": dr["value"], "ci": [dr["ci_low"], dr["ci_high"]],
                "truth": 100 * (truth[policy][key_metric] / truth["direct_official"][key_metric] - 1)}
        out[f"{name}.targets"] = [{k: t[k] for k in ("policy", "metric", "target", "verdict")}
                                  | {"truth": truth[t["policy"]][t["metric"]]} for t in info["targets"]]
        out[f"{name}.certification"] = {n: c["status"] for n, c in info["certification"].items()}
    return out


def main(out_dir: Path | None = None, runs: Path | None = None) -> dict[str, Any]:
    """Run both examples (into ``runs``, or a temporary folder), write the tables and the headline numbers; return
    the headlines."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in EXAMPLES:
            results[name] = run_example(name, runs or Path(tmp))
    numbers = headlines(results)
    if out_dir is not None:
        doc = out_dir / "published_counterfactuals.md"
        text = doc.read_text()
        for name, (est, info, truth) in results.items():
            start, end = f"<!-- tables:{name} -->", f"<!-- end:{name} -->"
            if start not in text or end not in text:
                raise SystemExit(f"{doc} has no {start} ... {end} markers for the {name} tables")
            body = [start, "", *table(name, est, truth), "", "Declared targets (DR 95 % interval, the run's verdict, and the truth):",
                    "", *target_table(info, truth), "", end]
            text = text[:text.index(start)] + "\n".join(body) + text[text.index(end) + len(end):]
        doc.write_text(text)
        (out_dir / "published.json").write_text(json.dumps(numbers, indent=1) + "\n")
    return numbers


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the headlines, write nothing into docs/")
    parser.add_argument("--runs", type=Path, default=None, help="keep the two run folders here")
    args = parser.parse_args()
    print(json.dumps(main(None if args.dry_run else HERE, args.runs), indent=1))
