"""Diagnostics a reader can act on: weight spread per policy (once), estimator settings, outcome-model quality."""

from __future__ import annotations

import numpy as np
import pytest

from ope.evaluation.weights import BIN_LABELS, WeightHistogram
from ope.report.diagnostics import diagnostics_section, models_section


def test_weight_histogram_bins_by_hand_and_merges_exactly(rng: np.random.Generator) -> None:
    h = WeightHistogram()
    h.add("p", np.array([0.0, 0.05, 0.1, 1.0, 2.0, 10.0, 99.0, 100.0]), np.array([2.0, 1, 1, 1, 1, 1, 1, 1]))
    assert h.shares()["p"] == {label: share / 9 for label, share in zip(BIN_LABELS, [2, 1, 1, 1, 1, 2, 1], strict=True)}
    w, sw = rng.lognormal(0, 2, 1000) * (rng.random(1000) > 0.2), rng.uniform(0.5, 2, 1000)
    whole, parts = WeightHistogram(), WeightHistogram()
    whole.add("p", w, sw)
    for block in np.array_split(np.arange(1000), 7):
        part = WeightHistogram()
        part.add("p", w[block], sw[block])
        parts.merge(part)
    np.testing.assert_allclose(parts.mass["p"], whole.mass["p"], rtol=1e-12)
    assert whole.mass["p"].sum() == pytest.approx(sw.sum())


def _diag(ess: float, *, hyper: object = None, modified: int = 0, warnings: tuple[str, ...] = ()) -> dict[str, object]:
    return {"ess": ess, "max_weight": 42.0, "mean_weight": 1.01, "mean_weight_se": 0.02, "mean_weight_flag": False,
            "unsupported_share": 0.0, "n_modified": modified, "hyperparameter": hyper, "warnings": list(warnings)}


def test_weights_are_shown_once_per_policy_with_ess_as_a_share() -> None:
    info = {"data": {"rows": 1000},
            "diagnostics": {"p": {"IPS": _diag(30.0), "SNIPS": _diag(30.0), "DM": _diag(30.0), "DR": _diag(30.0),
                                  "SwitchDR": _diag(30.0, hyper=[30.0], modified=12)},
                            "q": {"DM": _diag(900.0)}},
            "weight_shares": {"p": dict.fromkeys(BIN_LABELS, 0.0) | {"0": 0.25, "[10, 100)": 0.75}}}
    html = diagnostics_section(info)
    assert html.count(">42.00<") == 1                        # the weight statistics of p, once (not per estimator)
    assert "3.0% of n" in html and "class='bad'>3.0% of n" in html
    assert "25.0 %" in html and "75.0 %" in html
    assert ">q<" not in html                                  # DM alone uses no weights: no weight row
    assert "SwitchDR" in html and ">12<" in html and ">IPS<" not in html   # only what differs by estimator


def test_models_section_flags_a_weak_or_biased_model() -> None:
    info = {"model_quality": {"success": {"auc": 0.6, "log_loss": 0.14}, "log_latency": {"mae": 1.2e4, "mae_log": 0.65,
                                                                                          "mean_ratio": 0.8}}}
    html = models_section(info)
    assert "0.600" in html and "weak (AUC &lt; 0.65)" in html and "mean off by -20%" in html and "success, cost" in html
    assert models_section({"model_quality": None}) == ""
