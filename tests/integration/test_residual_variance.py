"""The arm-pooled DR variance experiment (docs/experiments/residual_variance.md) is what its script writes.

The full comparison (500 replications and 60 LightGBM + certification seeds) takes about 17 minutes on 2 cores, so
it lives in the script. Here: the interval formulas against a case computed by hand; the first replications'
intervals re-computed with today's code against the saved ones; the markdown the rendering of the saved JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from estimators.feedback import BanditFeedback
from ope.data.schema import METRICS
from tests.conftest import ROOT as PROJECT_ROOT
from tests.conftest import experiment_script

EXPERIMENTS = Path(PROJECT_ROOT) / "docs" / "experiments"



@pytest.fixture(scope="module")
def saved() -> dict:
    return json.loads((EXPERIMENTS / "residual_variance.json").read_text())


def test_intervals_by_hand() -> None:
    """Four rows, two arms, logged half-half; q̂ = 1 on arm 0 and 3 on arm 1; y = 2, 0, 5, 1, so ε = 1, −1, 2, −2.

    Σ ε² per arm: 2 and 8 over 2 rows each, all-arm mean 10 / 4 = 2.5, so σ̂² = (2 + 250) / 102 on arm 0 and
    (8 + 250) / 102 on arm 1. Variances carry n / (n − 1) / n² = 1/12.

    Target on arm 0 (w = 2, 2, 0, 0): ψ = 1 + w ε = 3, −1, 1, 1, θ̂ = 1, empirical 8 / 12; arm-pooled (DM constant)
    σ̂²₀ · Σ w² / 12 = 252 · 8 / 102 / 12, the larger, so it is used.
    Target on arm 1 (w = 0, 0, 2, 2): ψ = 3, 3, 7, −1, θ̂ = 3, empirical 32 / 12; arm-pooled 258 · 8 / 102 / 12 is
    smaller, so the arm-pooled interval is the normal one.
    """
    fb = BanditFeedback(actions=np.array([0, 0, 1, 1]), rewards=np.array([[2.0], [0.0], [5.0], [1.0]]),
                        propensities=np.full(4, 0.5), n_arms=2)
    q = np.zeros((4, 2, 1))
    q[:, 0], q[:, 1] = 1.0, 3.0
    z = NormalDist().inv_cdf(0.975)
    script = experiment_script("residual_variance")
    for arm, value, empirical, pooled in ((0, 1.0, 8 / 12, 252 * 8 / 102 / 12), (1, 3.0, 32 / 12, 258 * 8 / 102 / 12)):
        pi = np.zeros((4, 2))
        pi[:, arm] = 1.0
        got = script.intervals(fb, q, pi)
        for method, variance in (("normal", empirical), ("arm-pooled", max(empirical, pooled))):
            np.testing.assert_allclose(np.ravel(got[method]), [value - z * variance**0.5, value + z * variance**0.5],
                                       rtol=1e-12, err_msg=f"arm {arm}, {method}")


def test_markdown_is_the_rendering_of_the_saved_results(saved: dict) -> None:
    text = (EXPERIMENTS / "residual_variance.md").read_text()
    assert experiment_script("residual_variance").tables(saved["coverage"], saved["certified"]) in text
    assert f"Command: `{saved['command']}`" in text


def test_first_replications_are_reproduced(saved: dict) -> None:
    script = experiment_script("residual_variance")
    spot = saved["coverage"]["spot"]
    for rep in range(script.SPOT):
        got = script.coverage_replication(rep)
        for key, intervals in spot.items():
            policy, method = key.split("|")
            np.testing.assert_allclose(np.stack(got[policy][method]), intervals[rep], rtol=1e-9, err_msg=key)


def test_readme_quotes_the_saved_cells(saved: dict) -> None:
    cert = saved["certified"]["cells"]["certified"]
    cov = saved["coverage"]["cells"]
    ttft = METRICS.index("ttft_ms")
    width = cert["arm-pooled"]["width"][ttft] / cert["skew-corrected"]["width"][ttft]
    seeds = saved["certified"]["seeds"][1] - saved["certified"]["seeds"][0]
    quoted = [
        (f"covers the truth in {100 * cert['arm-pooled']['coverage'][ttft]:.1f} % of {seeds} seeds "
         f"(skew-corrected: {100 * cert['skew-corrected']['coverage'][ttft]:.1f} %) at {width:.2f}× the width"),
        (f"to {100 * cov['cheapest']['arm-pooled']['coverage'][ttft]:.1f} % but over-covers the paired TTFT "
         f"difference ({100 * cov['diff']['arm-pooled']['coverage'][ttft]:.1f} %)"),
    ]
    readme = " ".join((Path(PROJECT_ROOT) / "README.md").read_text().split())
    for text in quoted:
        assert text in readme, text
