"""`ope.evaluate` from a notebook: the CLI's numbers for the same policies and estimators, no TOML file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import ope
import policies
from ope.config import load_config
from ope.evaluation.tables import ESTIMATE_COLUMNS
from tests.conftest import ROOT as PROJECT_ROOT
from tests.integration.test_saved_estimates import FIXTURES, assert_same_estimates

SAMPLE = PROJECT_ROOT / "logs"


@pytest.mark.slow
def test_evaluate_gives_the_cli_numbers_on_the_bundled_sample() -> None:
    result = ope.evaluate(logs=SAMPLE / "sample_requests.parquet", catalog=SAMPLE / "catalog.csv",
                          policies={"direct_official": policies.DirectOfficial(fallback="cheapest"),
                                    "cheapest": policies.Mixture(policy=policies.Cheapest(), epsilon=0.05),
                                    "price_weighted": policies.PriceWeighted()},
                          baseline="direct_official", estimators=["IPS", "SNIPS", "DR"])
    assert result.estimates.columns == ESTIMATE_COLUMNS
    # the quickstart's saved estimates.csv (`ope run`), restricted to these policies and estimators
    cli = pl.read_csv(FIXTURES / "quickstart.csv").filter(pl.col("policy").is_in(result.names) & pl.col("estimator").is_in(["IPS", "SNIPS", "DR"]))
    order = {"IPS": 0, "SNIPS": 1, "DR": 2}
    key = [pl.col("policy").replace_strict({n: i for i, n in enumerate(result.names)}), pl.col("estimator").replace_strict(order)]
    assert_same_estimates(result.estimates.sort(key, maintain_order=True), cli.sort(key, maintain_order=True))
    actions = result.actions.read("cheapest")
    assert actions.columns == ["request_id", "arm", "probability"] and actions.height > result.evaluated_rows


def test_evaluate_takes_a_loaded_config_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(PROJECT_ROOT / "configs" / "quickstart.toml", base=PROJECT_ROOT)
    result = ope.evaluate(cfg, estimators=["IPS"], alpha=0.1)
    assert set(result.estimates["estimator"]) == {"IPS"} and result.config.evaluation.alpha == 0.1
    assert result.names == [p.name for p in cfg.policies]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "needs a config, or logs, catalog and policies"),
    ({"logs": "x.parquet", "catalog": "c.csv", "policies": {"a": policies.Uniform()}, "baseline": "b"}, "baseline 'b' is not among"),
    ({"logs": "x.parquet", "catalog": "c.csv", "policies": {"a": policies.Uniform()}, "baseline": "a", "estimators": ["XYZ"]},
     "unknown estimator 'XYZ'"),
])
def test_evaluate_refuses_bad_arguments_clearly(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ope.OPEError, match=match):
        ope.evaluate(**kwargs)  # type: ignore[arg-type]


def test_version_is_the_installed_one() -> None:
    from importlib import metadata

    assert ope.__version__ == metadata.version("llm-ope")
