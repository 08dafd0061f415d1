"""Write what ``ope export`` produced: the gateway file, and the comparison run's report under ``RUN_DIR/exports/``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from ope.errors import OPEError
from ope.evaluation.actions import file_stems
from ope.evaluation.export import Export
from ope.gateway import CANNOT_EXPRESS, LABELS
from ope.report.outputs import json_safe, write_outputs
from policies.base import policy_to_json

__all__ = ["print_export", "write_export"]

_FILE_KIND = {"litellm": "LiteLLM router config", "openrouter": "OpenRouter provider preferences", "json": "group weights"}


def _gateway_text(export: Export, out: Path) -> str:
    """The gateway file: YAML for a LiteLLM config (JSON if ``out`` ends in .json), JSON otherwise."""
    if export.format == "litellm" and out.suffix.lower() != ".json":
        header = (f"# LiteLLM proxy router config written by `ope export` for policy '{export.policy}'.\n"
                  "# Tag each request with its task (tags: [\"task:<task>\"]); untagged requests use the 'default' deployments.\n"
                  "# Add your api_base / api_key to each deployment's litellm_params.\n")
        return header + yaml.safe_dump(export.document, sort_keys=False)
    return json.dumps(export.document, indent=2) + "\n"


def write_export(export: Export, run_dir: Path, out: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write the gateway file to ``out`` and ``RUN_DIR/exports/<policy>-<format>/``: the comparison run's report,
    ``export.json`` (the comparison, for machines) and ``policy.json`` (the exported policy, `policies.policy_from_json`)."""
    if out.exists() and not overwrite:
        raise OPEError(f"{out} already exists; pass --overwrite to replace it.")
    name = f"{file_stems([export.policy])[export.policy]}-{export.format}"
    paths = write_outputs(export.result, run_dir / "exports", name, overwrite=True)
    folder = paths["report"].parent
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_gateway_text(export, out))
    (folder / "policy.json").write_text(policy_to_json(export.exported))
    (folder / "export.json").write_text(json.dumps(json_safe(summary(export, out)), indent=2, allow_nan=False))
    return paths | {"gateway": out, "policy": folder / "policy.json", "export": folder / "export.json"}


def summary(export: Export, out: Path) -> dict[str, Any]:
    """The comparison for machines: what was exported where, and per metric the estimates and their paired difference."""
    return {"policy": export.policy, "format": export.format, "gateway": LABELS[export.format], "gateway_file": str(out),
            "as_computed": export.as_computed, "as_deployable": export.as_deployable, "estimator": export.estimator,
            "alpha": export.result.config.evaluation.alpha, "cannot_express": CANNOT_EXPRESS[export.format],
            "comparison": export.comparison().to_dicts(),
            "warnings": export.result.warnings}


def _cell(value: float | None, low: float | None, high: float | None, *, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    fmt = "{:+.4g}" if sign else "{:.4g}"
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"


def print_export(export: Export, paths: dict[str, Path]) -> None:
    """The comparison table, what the format cannot express, and where everything was written."""
    level = round(100 * (1 - export.result.config.evaluation.alpha))
    print(f"'{export.policy}' as computed vs as deployable in {LABELS[export.format]} ({export.estimator}, {level} % intervals; "
          "difference = deployable − computed, paired)")
    print(f"{'metric':<16}{'as computed':>34}{'as deployable':>34}{'difference':>36}{'change':>10}")
    for r in export.comparison().iter_rows(named=True):
        rel = r["relative_value"]
        print(f"{r['metric']:<16}{_cell(r['computed_value'], r['computed_ci_low'], r['computed_ci_high']):>34}"
              f"{_cell(r['deployable_value'], r['deployable_ci_low'], r['deployable_ci_high']):>34}"
              f"{_cell(r['difference_value'], r['difference_ci_low'], r['difference_ci_high'], sign=True):>36}"
              f"{'n/a' if rel is None or math.isnan(rel) else f'{rel:+.1f}%':>10}")
    for warning in export.result.warnings:
        print(f"warning: {warning}")
    print(f"\n{LABELS[export.format]} cannot express: {CANNOT_EXPRESS[export.format]}.")
    print(f"wrote:     {paths['gateway']} ({_FILE_KIND[export.format]})\nreport:    {paths['report']}")
