"""Importers on hand-written fixtures: exact mappings, accounting, errors, `ope validate` and `ope run`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ope.cli import main
from ope.data.catalog import Catalog, load_catalog
from ope.data.schema import Status
from ope.data.validate import load_logs
from ope.errors import ConfigError, SchemaError
from ope.importers import MalformedRecordError, import_logs, load_router_config
from ope.importers.common import status_from_error, status_from_finish, status_from_http
from ope.importers.names import host_provider, model_key, provider_key

FIXTURES = Path(__file__).parents[1] / "fixtures" / "importers"
CATALOG = FIXTURES / "catalog.csv"

#: format, input, router config, extra CLI args, rows read, written, malformed, skipped
CASES = [
    ("litellm", "litellm_spend_logs.csv", "litellm_router.toml", ["--error-logs", str(FIXTURES / "litellm_error_logs.csv")],
     21, 17, 3, 1),
    ("openrouter", "openrouter_generations.ndjson", "openrouter_router.toml", [], 15, 11, 3, 1),
    ("otel", "otel_genai_spans.json", None, [], 10, 6, 2, 2),
    ("burstgpt", "burstgpt_trace.csv", "burstgpt_router.toml", [], 22, 19, 3, 0),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG)


def ope_import(argv: list[str]) -> int:
    """`ope import ...` exactly as a user types it."""
    return main(["import", *argv])


def _import(tmp: Path, case: tuple, suffix: str = ".parquet") -> Path:  # type: ignore[type-arg]
    fmt, name, router, extra = case[:4]
    out = tmp / f"{fmt}{suffix}"
    argv = [fmt, str(FIXTURES / name), "--out", str(out), "--catalog", str(CATALOG), "--errors", str(tmp / f"{fmt}.errors.ndjson"), *extra]
    assert ope_import(argv + (["--router-config", str(FIXTURES / router)] if router else [])) == 0
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fixture_accounting_and_validation(tmp_path: Path, catalog: Catalog, case: tuple) -> None:  # type: ignore[type-arg]
    out = _import(tmp_path, case)
    report = json.loads(out.with_name(f"{case[0]}.import.json").read_text())
    assert (report["rows_read"], report["rows_written"], report["malformed"], report["skipped"]) == case[4:]
    assert report["rows_read"] == report["rows_written"] + report["malformed"] + report["skipped"]
    assert sum(report["malformed_by_reason"].values()) == report["malformed"]
    errors = pl.read_ndjson(tmp_path / f"{case[0]}.errors.ndjson")
    assert errors.height == report["malformed"] and set(errors.columns) == {"where", "reason", "record"}
    validated = load_logs(out, catalog)   # `ope validate`: raises on any problem
    assert validated.problems == () and validated.logs.height == report["rows_written"]
    assert set(validated.logs["status"].unique()) <= {s.value for s in Status}


@pytest.mark.parametrize("suffix", [".csv", ".ndjson"])
def test_other_output_formats_validate(tmp_path: Path, catalog: Catalog, suffix: str) -> None:
    out = _import(tmp_path, CASES[1], suffix)
    assert load_logs(out, catalog).logs.height == 11


RUN_CONFIG = """
[data]
logs = "{logs}"
catalog = "{catalog}"
[evaluation]
baseline = "uniform"
estimators = ["IPS", "SNIPS"]
[predictors]
folds = 2
n_estimators = 5
min_child_samples = 1
propensity_min_child_samples = 1
propensity_n_estimators = 5
[[policies]]
name = "uniform"
kind = "uniform"
[[policies]]
name = "cheapest"
kind = "cheapest"
epsilon = 0.1
[tracking]
enabled = false
"""


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fixture_runs_through_ope_run(tmp_path: Path, case: tuple) -> None:  # type: ignore[type-arg]
    logs = _import(tmp_path, case)
    config = tmp_path / "run.toml"
    config.write_text(RUN_CONFIG.format(logs=logs, catalog=CATALOG))
    code = main(["run", str(config), "--no-tracking", "--quiet", "--out", str(tmp_path / "reports"), "--run-name", "r"])
    assert code == 0
    estimates = pl.read_csv(tmp_path / "reports" / "r" / "estimates.csv")
    assert set(estimates["estimator"]) == {"IPS", "SNIPS"}
    assert estimates.filter(pl.col("kind") == "value")["value"].is_not_null().all()


def test_litellm_mapping_field_by_field(catalog: Catalog) -> None:
    result = import_logs("litellm", FIXTURES / "litellm_spend_logs.csv", catalog=catalog,
                         router_config=FIXTURES / "litellm_router.toml")
    row = {r["request_id"]: r for r in result.logs.iter_rows(named=True)}
    first = row["chatcmpl-0001"]
    assert (first["arm"], first["model"], first["task"], first["input_tokens"], first["output_tokens"]) == \
        ("together/qwen3-32b", "qwen3-32b", "rag", 1000, 200)
    assert (first["ttft_ms"], first["latency_ms"], first["cost_usd"], first["tenant"]) == (350.0, 4200.0, 0.00027, "team-search")
    assert first["propensity"] == pytest.approx(3 / 8)                     # weights 3:2:1:2 over the group
    assert row["chatcmpl-0003"]["arm"] == "alibaba/qwen3-32b"             # dashscope alias
    assert row["chatcmpl-0004"]["status"] == "rate_limited"
    assert row["chatcmpl-0005"]["ttft_ms"] == 0.0                         # completionStartTime == endTime
    assert row["chatcmpl-0006"]["status"] == "timeout"
    assert row["chatcmpl-0007"]["arm"] == "deepseek/deepseek-v3.2" and row["chatcmpl-0007"]["propensity"] == pytest.approx(2 / 3)
    assert row["chatcmpl-0018"]["status"] == "context_overflow"           # class beats the generic 400
    assert result.report.propensity == "reconstructed (simple-shuffle)"


def test_openrouter_fallbacks_stay_visible(catalog: Catalog) -> None:
    result = import_logs("openrouter", FIXTURES / "openrouter_generations.ndjson", catalog=catalog,
                         router_config=FIXTURES / "openrouter_router.toml")
    logs = result.logs
    fell_back = logs.filter(pl.col("failed_providers").list.len() > 0)
    assert fell_back["failed_providers"].to_list() == [["Groq"], ["DeepSeek"], ["Groq"]]
    assert fell_back["propensity"].is_null().all()
    assert (result.report.fallback_attempts, result.report.requests_with_fallbacks) == (3, 3)
    first = logs.row(0, named=True)
    assert (first["arm"], first["ttft_ms"], first["latency_ms"], first["tenant"]) == ("deepinfra/qwen3-32b", 410.0, 3530.0, "app-4821")
    p_in, p_out = catalog.prices_at(logs["ts"].head(1))
    price = (3 * p_in + p_out)[0] / 4
    expected = price[catalog.arms.index("deepinfra/qwen3-32b")] ** -2 / (price[[0, 3, 5, 7]] ** -2).sum()
    assert first["propensity"] == pytest.approx(expected)
    assert logs.filter(pl.col("request_id").str.starts_with("gen-1759305780"))["status"].item() == "truncated"


def test_otel_provider_from_server_address_and_alias(tmp_path: Path, catalog: Catalog) -> None:
    plain = import_logs("otel", FIXTURES / "otel_genai_spans.json", catalog=catalog)
    assert plain.logs["arm"][0] == "together/qwen3-32b"         # provider 'openai', server api.together.xyz
    assert plain.logs["ttft_ms"].to_list()[:2] == [420.0, 160.0]   # attribute, then first-chunk event
    assert "unknown provider 'aliyuncs' or 'openai'" in " ".join(plain.report.malformed)
    config = tmp_path / "aliases.toml"
    config.write_text('[aliases.providers]\naliyuncs = "alibaba"\n')
    aliased = import_logs("otel", FIXTURES / "otel_genai_spans.json", catalog=catalog, router_config=config)
    assert aliased.report.rows_written == plain.report.rows_written + 1


def test_burstgpt_is_a_deterministic_workload(catalog: Catalog) -> None:
    result = import_logs("burstgpt", FIXTURES / "burstgpt_trace.csv", catalog=catalog,
                         router_config=FIXTURES / "burstgpt_router.toml")
    logs = result.logs
    assert set(logs["arm"]) == {"azure/chatgpt", "azure/gpt-4"}
    assert (logs["propensity"] == 1.0).all()
    failed = logs.filter(pl.col("output_tokens") == 0)
    assert set(failed["status"]) == {"server_error"} and (failed["cost_usd"] == 0).all()
    assert logs["ts"][0].isoformat() == "2023-03-01T00:00:05+00:00"
    assert logs["latency_ms"][0] == pytest.approx(600 + 18 * 1000 / 40)
    assert any("ASSUMED timings" in n for n in result.report.notes)


def test_strict_makes_malformed_records_fatal(tmp_path: Path, catalog: Catalog, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(MalformedRecordError, match=r"3 malformed record\(s\)[\s\S]*prompt_tokens: expected an integer"
                                                   r"[\s\S]*litellm_spend_logs.csv line 11"):
        import_logs("litellm", FIXTURES / "litellm_spend_logs.csv", catalog=catalog, strict=True,
                    router_config=FIXTURES / "litellm_router.toml")
    out = tmp_path / "x.parquet"
    assert ope_import(["openrouter", str(FIXTURES / "openrouter_generations.ndjson"), "--out", str(out), "--strict",
                       "--catalog", str(CATALOG)]) == 2
    assert "truncated or invalid JSON line — 1 record" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "exc", "match"),
    [
        ("[router]\nstrategy = 'round-robin'\n", ConfigError, "strategy must be one of"),
        ("[router]\nstrategy = 'simple-shuffle'\n", ConfigError, "needs \\[\\[router.deployments\\]\\]"),
        ("[router]\nweights = 1\n", ConfigError, "unknown key 'weights' in \\[router\\]"),
        ("[[router.deployments]]\narm = 'a/b'\nweight = -1\n", ConfigError, "weight must be a number >= 0"),
        ("[burstgpt]\nstart = 'yesterday'\n", ConfigError, "start must be an ISO 8601 time"),
        ("[router\n", ConfigError, "not valid TOML"),
    ],
    ids=["unknown strategy", "shuffle without deployments", "unknown key", "negative weight", "bad start", "bad toml"],
)
def test_router_config_errors(tmp_path: Path, text: str, exc: type[Exception], match: str) -> None:
    path = tmp_path / "router.toml"
    path.write_text(text)
    with pytest.raises(exc, match=match):
        load_router_config(path)


def test_router_config_sort_or_order_is_deterministic(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "router.json"
    path.write_text(json.dumps({"router": {"strategy": "openrouter-default", "sort": "price"}}))
    assert load_router_config(path).strategy == "deterministic"
    result = import_logs("openrouter", FIXTURES / "openrouter_generations.ndjson", catalog=catalog, router_config=path)
    assert result.logs["propensity"].is_null().all()
    assert any("deterministic router" in n for n in result.report.notes)


def test_unknown_arm_in_router_config_is_named(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "router.toml"
    path.write_text("[router]\nstrategy = 'simple-shuffle'\n[[router.deployments]]\narm = 'ghost/qwen3-32b'\nweight = 1\n")
    with pytest.raises(ConfigError, match=r"ghost/qwen3-32b"):
        import_logs("litellm", FIXTURES / "litellm_spend_logs.csv", catalog=catalog, router_config=path)


@pytest.mark.parametrize(
    ("fmt", "content", "match"),
    [
        ("burstgpt", "Time,Model\n1,ChatGPT\n", r"missing column\(s\) \['Timestamp', 'Request tokens', 'Response tokens'\]"),
        ("otel", "", "empty"),
        ("openrouter", "   \n", "empty"),
    ],
    ids=["burstgpt columns", "empty otel", "blank openrouter"],
)
def test_bad_files_are_clear_errors(tmp_path: Path, catalog: Catalog, fmt: str, content: str, match: str) -> None:
    path = tmp_path / "input.json"
    path.write_text(content)
    with pytest.raises(SchemaError, match=match):
        import_logs(fmt, path, catalog=catalog)


def test_without_catalog_litellm_keeps_logged_names(tmp_path: Path) -> None:
    result = import_logs("litellm", FIXTURES / "litellm_spend_logs.csv")
    assert "together/qwen3-32b" in set(result.logs["arm"]) and "fireworks/qwen3-32b" in set(result.logs["arm"])
    with pytest.raises(SchemaError, match="needs --catalog"):
        import_logs("otel", FIXTURES / "otel_genai_spans.json")


def test_existing_output_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "logs.parquet"
    out.write_text("keep me")
    assert ope_import(["litellm", str(FIXTURES / "litellm_spend_logs.csv"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (status_from_http, 429, Status.RATE_LIMITED), (status_from_http, 504, Status.TIMEOUT),
        (status_from_http, 422, Status.BAD_REQUEST), (status_from_http, 502, Status.SERVER_ERROR),
        (status_from_error, "RateLimitError", Status.RATE_LIMITED), (status_from_error, "APITimeoutError", Status.TIMEOUT),
        (status_from_error, "ContextWindowExceededError", Status.CONTEXT_OVERFLOW),
        (status_from_error, "ContentPolicyViolationError", Status.CONTENT_FILTER),
        (status_from_error, "BadRequestError", Status.BAD_REQUEST), (status_from_error, "InternalServerError", Status.SERVER_ERROR),
        (status_from_error, "429", Status.RATE_LIMITED), (status_from_finish, "length", Status.TRUNCATED),
        (status_from_error, "²", Status.SERVER_ERROR), (status_from_error, "٤٢٩", Status.RATE_LIMITED),  # a digit int() refuses; Arabic-Indic 429
        (status_from_finish, "stop", Status.OK), (status_from_finish, None, Status.OK),
    ],
)
def test_status_mapping(fn: object, value: object, expected: Status) -> None:
    assert fn(value) == expected  # type: ignore[operator]


def test_superscript_digits_are_a_clear_error_not_a_crash() -> None:
    """str.isdigit() accepts '²', which int() refuses (found by the corrupted-cells property test)."""
    from ope.importers.common import Bad, get_int

    with pytest.raises(Bad, match="expected an integer"):
        get_int({"prompt_tokens": "²"}, "prompt_tokens")
    assert get_int({"prompt_tokens": " 12 "}, "prompt_tokens") == 12


def test_name_normalisation() -> None:
    assert model_key("Qwen/Qwen3-32B:free") == model_key("qwen3-32b") == "qwen332b"
    assert provider_key("together_ai") == provider_key("Together AI") == "together"
    assert host_provider("https://api.together.xyz/v1") == "together"
    assert host_provider("10.0.0.1") is None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_example_configs_run_on_the_imported_fixture(tmp_path: Path, case: tuple) -> None:  # type: ignore[type-arg]
    logs = _import(tmp_path, case)
    config = Path(__file__).parents[2] / "configs" / f"import_{case[0]}.toml"
    code = main(["run", str(config), "--logs", str(logs), "--catalog", str(CATALOG), "--no-tracking", "--quiet",
                 "--out", str(tmp_path / "reports"), "--run-name", "example"])
    assert code == 0
    assert (tmp_path / "reports" / "example" / "summary.json").exists()
