"""Certified constrained routing against the simulator's exact truth, with LightGBM's own q̂ bias.

`docs/experiments/certified_routing.py` holds the experiment; its markdown
(`docs/experiments/certified_routing.md`) is the full run (200 seeds × 10,000 requests). Here the same
code runs at the size that fits a few minutes on 2 cores: 20 seeds × 6,000 requests, the LP solved on
3,000 of them (``max_rows``). Coverage is checked on those 20 seeds, not on 200 (200 seeds take about
40 minutes on both cores; the script measures them): at least 90 % on the metrics that reach 98 % over 200 seeds,
at least 75 % on the two that do not (success, satisfaction).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT, experiment_script

pytestmark = pytest.mark.slow

SEEDS = range(2000, 2020)
ROWS, MAX_ROWS = 6_000, 3_000



@pytest.fixture(scope="module")
def results(shared_map: Callable[[str, range, Callable[[int], Any]], list]) -> tuple[ModuleType, list]:
    experiment = experiment_script("certified_routing")  # registered in sys.modules before the shared runs are unpickled
    return experiment, shared_map("certified-routing", SEEDS, lambda seed: experiment.run_seed(seed, ROWS, max_rows=MAX_ROWS))


def test_certified_router_meets_its_targets_in_truth(results: tuple[ModuleType, list]) -> None:
    experiment, runs = results
    fitted = [r for r in runs if "certified" in r.truth]
    assert len(fitted) == len(runs), [r.status for r in runs]
    met = [r.truth["certified"]["satisfaction"] >= experiment.MIN_SATISFACTION
           and r.truth["certified"]["sla_hit"] >= experiment.MIN_SLA_HIT for r in fitted]
    assert np.mean(met) >= 0.9, experiment.tables(runs)


def test_certified_router_is_still_cheaper_than_direct_official_access(results: tuple[ModuleType, list]) -> None:
    """On average and in at least 90 % of seeds: where the bounds stay wide, tightening toward an SLA-hit floor that
    direct official access itself misses (about 0.5 against 0.65) can buy fast arms dearer than the official one."""
    _, runs = results
    ratio = np.array([r.truth["certified"]["cost_usd"] / r.official_cost for r in runs])
    assert ratio.mean() < 1.0, ratio.round(3)
    assert (ratio < 1.0).mean() >= 0.9, ratio.round(3)


def test_uncertified_router_misses_more_often(results: tuple[ModuleType, list]) -> None:
    experiment, runs = results

    def met(label: str) -> float:
        ok = [r for r in runs if label in r.truth]
        return float(np.mean([r.truth[label]["satisfaction"] >= experiment.MIN_SATISFACTION
                              and r.truth[label]["sla_hit"] >= experiment.MIN_SLA_HIT for r in ok]))

    assert met("uncertified") < met("certified"), experiment.tables(runs)


#: metrics whose 95 % DR interval (arm-pooled, the run's default) covered the truth in >= 97 % of the 200 seeds of
#: certified_routing.md; the others are lower there (success 95 %, satisfaction 93 %) and are held to 75 % on these
#: 20 seeds
STRICT = ("cost_usd", "sla_hit", "throughput_tps", "latency_ms", "ttft_ms")


def test_dr_intervals_of_the_evaluated_router_cover_the_truth(results: tuple[ModuleType, list]) -> None:
    experiment, runs = results
    for label in ("certified", "uncertified"):
        for metric in experiment.COVERED:
            covered = [r.covered[label][metric] for r in runs if label in r.covered]
            assert np.mean(covered) >= (0.9 if metric in STRICT else 0.75), (label, metric, experiment.tables(runs))


def _page_range(table_title: str, interval: str) -> str:
    """'lo–hi %' over every metric of the page's rows whose interval column starts with ``interval`` in the table
    after ``table_title``."""
    page = (ROOT / "docs" / "experiments" / "certified_routing.md").read_text()
    table = page[page.index(table_title):].split("\n\n")[1]
    shares = [int(cell.split("(")[1].split(" ")[0]) for row in table.splitlines()[2:]
              if row.split("|")[2].strip().startswith(interval) for cell in row.split("|")[3:-1]]
    return f"{min(shares)}–{max(shares)} %"


def test_readme_quotes_the_page() -> None:
    """The README's coverage ranges for the evaluated router and its paired difference are the page's."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    value = _page_range("DR 95 % interval of the evaluated", "arm-pooled")
    diff = _page_range("DR 95 % interval of the paired difference", "arm-pooled")
    assert f"the arm-pooled interval covers every metric in {value} of seeds" in readme, value
    assert f"the baseline a run reports against: {diff} of seeds for every metric" in readme, diff
