"""The coverage table (docs/experiments/coverage.md) is what docs/experiments/coverage.py writes.

The full Monte-Carlo (2,000 replications at n = 2,000, 640 at n = 20,000) takes about 10 minutes in two processes, so
it lives in the script. Here: the first replications' intervals are re-computed with today's code
and must equal the ones coverage.json holds; the markdown must be the script's rendering of that
JSON; and the README quotes the table's range.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT as PROJECT_ROOT
from tests.conftest import experiment_script

EXPERIMENTS = Path(PROJECT_ROOT) / "docs" / "experiments"



@pytest.fixture(scope="module")
def saved() -> dict:
    return json.loads((EXPERIMENTS / "coverage.json").read_text())


def test_markdown_is_the_rendering_of_the_saved_results(saved: dict) -> None:
    script = experiment_script("coverage", "coverage_experiment")
    text = (EXPERIMENTS / "coverage.md").read_text()
    assert text.endswith(script.tables(saved["results"]))
    assert f"Command: `{saved['command']}`" in text


def test_first_replications_are_reproduced(saved: dict) -> None:
    script = experiment_script("coverage", "coverage_experiment")
    small = next(r for r in saved["results"] if r["n"] == 2_000)
    got = script.run(2_000, script.SPOT, script.policies(), {k: np.asarray(v) for k, v in saved["truth"].items()}, log=False)
    assert got["spot"].keys() == small["spot"].keys()
    for key, intervals in small["spot"].items():
        np.testing.assert_allclose(got["spot"][key], intervals, rtol=1e-9, err_msg=key)


@pytest.mark.parametrize("method", ["arm-pooled", "skew-corrected"])
def test_dr_intervals_cover_as_the_readme_says(saved: dict, method: str) -> None:
    small = next(r for r in saved["results"] if r["n"] == 2_000)
    cov = np.array([small["cells"][f"{p}|DR|{method}"]["coverage"] for p in ("cheapest", "balanced", "diff")])
    readme = (Path(PROJECT_ROOT) / "README.md").read_text()
    quoted = f"DR's {method} 95 % interval covers the exact truth in {100 * cov.min():.1f}–{100 * cov.max():.1f} %"
    assert quoted in " ".join(readme.split()), quoted


def test_readme_quotes_the_large_sample_range(saved: dict) -> None:
    large = next(r for r in saved["results"] if r["n"] == 20_000)
    cov = np.array([large["cells"][f"{p}|DR|arm-pooled"]["coverage"] for p in ("cheapest", "balanced", "diff")])
    readme = " ".join((Path(PROJECT_ROOT) / "README.md").read_text().split())
    quoted = f"At n = 20,000 ({large['reps']} replications) DR's arm-pooled interval covers {100 * cov.min():.1f}–{100 * cov.max():.1f} %"
    assert quoted in readme, quoted


def test_readme_quotes_the_heavy_cells_and_the_confirmation_set(saved: dict) -> None:
    """The default interval's TTFT cells, and the replications 2,000-3,999 that played no part in choosing it."""
    small, confirm = saved["results"][0], next(r for r in saved["results"] if r.get("first"))
    ttft = experiment_script("coverage", "coverage_experiment").METRICS.index("ttft_ms")
    cell = lambda res, policy, method: res["cells"][f"{policy}|DR|{method}"]["coverage"][ttft]
    top = max(cell(small, p, "arm-pooled") for p in ("cheapest", "balanced", "diff"))
    every = np.array([confirm["cells"][f"{p}|DR|arm-pooled"]["coverage"] for p in ("cheapest", "balanced", "diff")])
    readme = " ".join((Path(PROJECT_ROOT) / "README.md").read_text().split())
    assert (confirm["n"], confirm["first"], confirm["reps"]) == (2_000, small["reps"], 2_000)
    for quoted in ((f"the cheapest target's TTFT ({100 * cell(small, 'cheapest', 'skew-corrected'):.1f} % skew-corrected) reads "
                    f"{100 * cell(small, 'cheapest', 'arm-pooled'):.1f} %, the paired TTFT difference {100 * cell(small, 'diff', 'arm-pooled'):.1f} %"),
                   f"the balanced target's TTFT at {100 * top:.1f} % ({round(top * small['reps']):,} of 2,000 replications",
                   f"there DR's arm-pooled interval covers every cell in {100 * every.min():.1f}–{100 * every.max():.1f} %"):
        assert quoted in readme, quoted
    assert top == cell(small, "balanced", "arm-pooled")
