"""Not one number changes: the quickstart's and both examples' estimates.csv equal the saved ones
(tests/fixtures/estimates/, written by ``ope run --no-tracking``), to 1e-9. The quickstart's was saved
before the one-evaluation-path redesign, and again when the log-scale models' smearing factor became one per arm
(all three fixtures then: DM and DR moved, and the rows of the routers fitted on q̂); the examples' were saved again when their constrained routers
became cross-fitted and certified (issue 17: only the rows of routed and mess_plus moved), and the Qwen3 example's
once more when MESS+ became evaluated by fold-wise rollouts (only the mess_plus rows moved), and again when
certification began holding targets to the run's own interval method (only the routed rows moved); all three again when
the arm-pooled interval became the default (DR's standard errors and intervals everywhere; in the examples also the
certified routers' rows, whose tightening follows those bounds); and all three once more when that interval was
moved by the Cornish–Fisher quantiles of its studentized estimate (DR's intervals everywhere, its values and standard
errors unchanged; in the examples also the certified routers' rows). The examples'
are checked by tests/integration/test_published.py, on its one re-run of both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ope.cli import main
from ope.data.schema import METRICS
from tests.conftest import ROOT as PROJECT_ROOT

pytestmark = pytest.mark.slow  # a whole run with outcome models

FIXTURES = Path(__file__).parents[1] / "fixtures" / "estimates"
KEYS = ["policy", "metric", "estimator", "kind"]
NUMBERS = ["value", "stderr", "ci_low", "ci_high", "n", "ess"]


def assert_same_estimates(got: pl.DataFrame, want: pl.DataFrame, rtol: float = 1e-9) -> None:
    """The same rows in the same order, every number equal to ``rtol`` (NaN where the other is NaN)."""
    assert got.select(KEYS).equals(want.select(KEYS))
    for column in NUMBERS:
        a, b = got[column].to_numpy().astype(float), want[column].to_numpy().astype(float)
        same = np.isclose(a, b, rtol=rtol, atol=0.0) | (np.isnan(a) & np.isnan(b))
        assert same.all(), (column, got.filter(~pl.Series(same)).select(*KEYS, column).head(), want.filter(~pl.Series(same))[column].head())


def test_quickstart_estimates_equal_the_saved_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples' estimates are checked by tests/integration/test_published.py, on the one re-run of both."""
    monkeypatch.chdir(PROJECT_ROOT)  # the configs' relative paths
    name = "quickstart"
    assert main(["run", f"configs/{name}.toml", "--out", str(tmp_path), "--run-name", name, "--quiet", "--no-tracking"]) == 0
    assert_same_estimates(pl.read_csv(tmp_path / name / "estimates.csv"), pl.read_csv(FIXTURES / f"{name}.csv"))
    # the README's "SLOPE picks SNIPS for satisfaction and TTFT and DR for the other five metrics"
    chosen = json.loads((tmp_path / name / "summary.json").read_text())["headline_estimators"]
    assert chosen == {m: "SNIPS" if m in ("satisfaction", "ttft_ms") else "DR" for m in METRICS}, chosen
