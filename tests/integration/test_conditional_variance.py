"""docs/experiments/conditional_variance.md is what its script writes, and today's code reproduces it.

The full run (2,000 replications) takes about 4 minutes, so it lives in the script. Here: the first
replications' intervals are re-computed (the script itself checks its normal and arm-pooled intervals
against the package's) and must equal the saved ones; the markdown must be the rendering of the saved
JSON; and the README quotes the page's ranges.
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


def test_readme_quotes_the_page(saved: dict) -> None:
    cells = saved["result"]["cells"]
    readme = " ".join((Path(PROJECT_ROOT) / "README.md").read_text().split())

    def span(method: str) -> str:
        cov = np.array([cells[f"{p}|{method}"]["coverage"] for p in ("cheapest", "balanced", "diff")])
        return f"{100 * cov.min():.1f}–{100 * cov.max():.1f} %"

    for quoted in (f"covers every cell in {span('exact')}", f"(a + b·q̂² per metric, no max) covers {span('variance function')}",
                   f"(with the exact one: up to {span('exact, max with empirical').split('–')[1]})"):
        assert quoted in readme, quoted
