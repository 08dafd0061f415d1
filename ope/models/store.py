"""Persist fitted LightGBM models without pickle: LightGBM's text format plus a JSON manifest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import lightgbm as lgb

from ope.models.predictors import MODELS, OutcomeModels
from ope.models.propensity import PropensityModel

__all__ = ["save_models", "load_models", "MANIFEST"]

MANIFEST = "manifest.json"


def save_models(directory: Path, outcomes: OutcomeModels | None, propensity: PropensityModel | None) -> Path:
    """Write every booster as ``<model>_fold<k>.txt`` and a manifest describing them."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"format": "lightgbm-text", "models": {}}
    if outcomes is not None:
        manifest["features"] = list(outcomes.features.names)
        manifest["categorical"] = list(outcomes.features.categorical)
        manifest["config"] = dataclasses.asdict(outcomes.config)
        manifest["quality"] = outcomes.quality
        manifest["failed_cost_by_arm"] = outcomes.failed_cost.tolist()
        for name, boosters in outcomes.boosters.items():
            files = []
            for k, booster in enumerate(boosters):
                path = directory / f"{name}_fold{k}.txt"
                booster.save_model(str(path))
                files.append(path.name)
            kind, rows = MODELS[name]
            manifest["models"][name] = {"kind": kind, "trained_on": rows, "files": files,
                                       "correction": outcomes.corrections[name],
                                       "correction_kind": "smearing factor" if kind == "log" else "logit shift"}
    if propensity is not None:
        files = []
        for k, booster in enumerate(propensity.boosters):
            path = directory / f"propensity_fold{k}.txt"
            booster.save_model(str(path))
            files.append(path.name)
        manifest["models"]["propensity"] = {"kind": "binary-choice", "files": files, "diagnostics": propensity.diagnostics}
        manifest.setdefault("features", list(propensity.features.names))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def load_models(directory: Path) -> tuple[dict[str, list[lgb.Booster]], dict[str, Any]]:
    """Boosters by model name (one per fold) and the manifest."""
    manifest = json.loads((directory / MANIFEST).read_text())
    boosters = {name: [lgb.Booster(model_file=str(directory / f)) for f in spec["files"]] for name, spec in manifest["models"].items()}
    return boosters, manifest
