"""docs/experiments/conditional_variance.md is what its script writes, and today's code reproduces it.

The full run (2,000 replications) takes about 4 minutes on two processes, so it lives in the script. Here: the first
replications' intervals are re-computed (the script itself checks its normal and arm-pooled standard errors and its
arm-pooled Cornish–Fisher interval, the run's default, against the package's) and must equal the saved ones; the markdown must be the rendering of the saved
JSON; and the README quotes the page's ranges.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ope.data.schema import METRICS
from tests.conftest import ROOT as PROJECT_ROOT
from tests.conftest import experiment_script

EXPERIMENTS = Path(PROJECT_ROOT) / "docs" / "experiments"
TTFT, THROUGHPUT = METRICS.index("ttft_ms"), METRICS.index("throughput_tps")


@pytest.fixture(scope="module")
def saved() -> dict:
    return json.loads((EXPERIMENTS / "conditional_variance.json").read_text())


def test_markdown_is_the_rendering_of_the_saved_results(saved: dict) -> None:
    script = experiment_script("conditional_variance")
    text = (EXPERIMENTS / "conditional_variance.md").read_text()
    assert script.tables(saved["result"]) in text
    assert f"Command: `{saved['command']}`" in text


def test_first_replications_are_reproduced(saved: dict) -> None:
    script = experiment_script("conditional_variance")
    truth = {k: np.asarray(v) for k, v in json.loads((EXPERIMENTS / "coverage.json").read_text())["truth"].items()}
    got = script.run(script.SPOT, truth, log=False)
    assert got["spot"].keys() == saved["result"]["spot"].keys()
    for key, intervals in saved["result"]["spot"].items():
        np.testing.assert_allclose(got["spot"][key], intervals, rtol=1e-9, err_msg=key)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _below(cell: dict) -> float:
    """Share of replications whose TTFT truth lies below the interval (neither covered nor above it)."""
    return 1 - cell["coverage"][TTFT] - cell["above"][TTFT]


def test_readme_quotes_the_page(saved: dict) -> None:
    cells = saved["result"]["cells"]
    readme = " ".join((Path(PROJECT_ROOT) / "README.md").read_text().split())

    def span(methods: tuple[str, ...], metric: int | None = None, policies: tuple[str, ...] = ("cheapest", "balanced", "diff")) -> str:
        cov = np.array([cells[f"{p}|{m}"]["coverage"] for p in policies for m in methods])
        cov = cov if metric is None else cov[:, metric]
        return f"{100 * cov.min():.1f}–{_pct(cov.max())}"

    boot = ("studentized bootstrap", "studentized bootstrap, arm-pooled se")
    tried = ("variance function with failure rate", "arm relative spread, calibrated")
    moved = "arm-pooled, Cornish–Fisher"
    for quoted in (f"covers every cell in {span(('exact',))}", f"(a + b·q̂² per metric, no max) covers {span(('variance function',))}",
                   f"(with the exact one: up to {span(('exact, max with empirical',)).split('–')[1]})",
                   f"lies above the truth in only {_pct(_below(cells['diff|arm-pooled']))} of the replications "
                   + f"(exact variance: {_pct(_below(cells['diff|exact']))})",
                   f"the cheapest target's TTFT still reads {_pct(cells[f'cheapest|{tried[0]}']['coverage'][TTFT])}",
                   f"the two targets' TTFT reads {span(tried[1:], TTFT, ('cheapest', 'balanced'))}",
                   f"covers DR's cells in only {span(boot)} (TTFT {span(boot, TTFT)})",
                   f"cover every cell in {span((moved,))} at the default's widths",
                   f"(the paired TTFT difference {_pct(cells[f'diff|{moved}']['coverage'][TTFT])}, the balanced target's TTFT "
                   + f"{_pct(cells[f'balanced|{moved}']['coverage'][TTFT])})"):
        assert quoted in readme, quoted
    above = {key: f"{100 * cell['above'][TTFT]:.1f}" for key, cell in cells.items()}
    quoted = (f"above it fall from {above['cheapest|arm-pooled']} to {_pct(cells[f'cheapest|{moved}']['above'][TTFT])} (cheapest) "
              f"and from {above['balanced|arm-pooled']} to {_pct(cells[f'balanced|{moved}']['above'][TTFT])} (balanced)")
    assert quoted in readme, quoted
    widths = {m: np.array([cells[f"{p}|{m}"]["width"] for p in ("cheapest", "balanced", "diff")]) for m in (moved, "arm-pooled")}
    np.testing.assert_allclose(widths[moved], widths["arm-pooled"], rtol=1e-9)  # moved, not widened


def test_reading_quotes_where_the_misses_fall(saved: dict) -> None:
    cells = saved["result"]["cells"]
    page = " ".join((EXPERIMENTS / "conditional_variance.md").read_text().split())
    above = {key: _pct(cell["above"][TTFT]) for key, cell in cells.items()}
    below = {key: _pct(_below(cell)) for key, cell in cells.items()}
    for quoted in (f"lies below the interval in {below['diff|exact']} of the replications and above it in {above['diff|exact']}",
                   f"almost never lies above the truth ({below['diff|arm-pooled']}) and misses only above it ({above['diff|arm-pooled']})",
                   f"above the interval in {above['cheapest|arm-pooled']} (exact variance: {above['cheapest|exact']})"):
        assert quoted in page, quoted


def test_reading_quotes_the_cornish_fisher_intervals(saved: dict) -> None:
    cells = saved["result"]["cells"]
    page = " ".join((EXPERIMENTS / "conditional_variance.md").read_text().split())
    cov = {key: np.array(cell["coverage"]) for key, cell in cells.items()}
    alone, moved = "arm-pooled alone, Cornish–Fisher", "arm-pooled, Cornish–Fisher"
    ttft = " / ".join(f"{100 * cov[f'{p}|{alone}'][TTFT]:.1f}" for p in ("cheapest", "balanced", "diff"))
    throughput = np.array([cov[f"{p}|{alone}"][THROUGHPUT] for p in ("cheapest", "balanced", "diff")])
    every = np.array([cov[f"{p}|{moved}"] for p in ("cheapest", "balanced", "diff")])
    for quoted in (f"alone they bring TTFT to {ttft} %", f"throughput at {100 * throughput.min():.1f}–{_pct(throughput.max())}",
                   f"every cell covers {100 * every.min():.1f}–{_pct(every.max())}",
                   f"the paired TTFT difference {_pct(cov[f'diff|{moved}'][TTFT])} (default {100 * cov['diff|arm-pooled'][TTFT]:.1f})",
                   f"the cheapest target's TTFT {_pct(cov[f'cheapest|{moved}'][TTFT])} ({100 * cov['cheapest|arm-pooled'][TTFT]:.1f})",
                   f"the balanced target's TTFT, {_pct(cov[f'balanced|{moved}'][TTFT])} (exact variance: {_pct(cov['balanced|exact'][TTFT])})"):
        assert quoted in page, quoted
