"""Fitted models in one format, for disk and for distributed workers, without pickle.

A manifest (JSON) describes the models — features, settings, per-fold corrections, held-out
quality — and each booster is LightGBM's own text format. On disk (a run's ``models/``) every
booster is a file named in the manifest; sent to a worker (`ope.evaluation.engines.ray`) the
same manifest carries the booster strings inline. Either way `outcome_models` and
`propensity_model` rebuild models that predict exactly as the fitted ones.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from ope.models.features import PairFeatures
from ope.models.predictors import MODELS, OutcomeModels, PredictorConfig
from ope.models.propensity import PropensityModel

__all__ = ["MANIFEST", "load_models", "manifest", "models_from_text", "models_to_text", "outcome_models", "propensity_model",
           "save_models"]

MANIFEST = "manifest.json"
Boosters = dict[str, list[lgb.Booster]]


def manifest(outcomes: OutcomeModels | None, propensity: PropensityModel | None) -> tuple[dict[str, Any], Boosters]:
    """The manifest describing the models, and their boosters by model name ("propensity" for the propensity model)."""
    out: dict[str, Any] = {"format": "lightgbm-text", "models": {}}
    boosters: Boosters = {}
    if outcomes is not None:
        out |= {"features": list(outcomes.features.names), "categorical": list(outcomes.features.categorical),
                "config": dataclasses.asdict(outcomes.config), "quality": outcomes.quality,
                "failed_cost_by_arm": outcomes.failed_cost.tolist(), "constants": outcomes.extra.get("constants", {})}
        for name, fold_boosters in outcomes.boosters.items():
            kind, rows = MODELS[name]
            out["models"][name] = {"kind": kind, "trained_on": rows, "correction": outcomes.corrections[name],
                                   "correction_kind": "smearing factor" if kind == "log" else "logit shift"}
            boosters[name] = fold_boosters
    if propensity is not None:
        out["models"]["propensity"] = {"kind": "binary-choice", "diagnostics": propensity.diagnostics,
                                       "features": list(propensity.features.names), "categorical": list(propensity.features.categorical)}
        out.setdefault("features", list(propensity.features.names))
        boosters["propensity"] = propensity.boosters
    return out, boosters


def outcome_models(spec: dict[str, Any], boosters: Boosters) -> OutcomeModels | None:
    """Outcome models that predict as the ones `manifest` described (no training q̂ or features), or None if it has none."""
    names = [name for name in spec["models"] if name != "propensity"]
    if not names:
        return None
    return OutcomeModels(
        q_hat=np.zeros((0, 0, 0)), folds=np.zeros(0, dtype=np.int64),
        features=PairFeatures.names_only(tuple(spec["features"]), tuple(spec["categorical"])),
        boosters={name: boosters[name] for name in names}, corrections={name: spec["models"][name]["correction"] for name in names},
        quality=spec["quality"], failed_cost=np.asarray(spec["failed_cost_by_arm"], dtype=np.float64),
        config=PredictorConfig(**spec["config"]), extra={"constants": spec.get("constants", {})})


def propensity_model(spec: dict[str, Any], boosters: Boosters) -> PropensityModel | None:
    """The propensity model `manifest` described (no training rows), or None if it has none."""
    entry = spec["models"].get("propensity")
    if entry is None:
        return None
    features = PairFeatures.names_only(tuple(entry["features"]), tuple(entry["categorical"]))
    return PropensityModel(np.zeros((0, 0)), np.zeros(0), boosters["propensity"], features, entry["diagnostics"])


def models_to_text(outcomes: OutcomeModels | None, propensity: PropensityModel | None) -> str:
    """The manifest with every booster inline (LightGBM model strings), as JSON text."""
    spec, boosters = manifest(outcomes, propensity)
    spec["boosters"] = {name: [b.model_to_string() for b in bs] for name, bs in boosters.items()}
    return json.dumps(spec)


def models_from_text(text: str) -> tuple[OutcomeModels | None, PropensityModel | None]:
    """The models `models_to_text` wrote."""
    spec = json.loads(text)
    boosters = {name: [lgb.Booster(model_str=s) for s in strings] for name, strings in spec["boosters"].items()}
    return outcome_models(spec, boosters), propensity_model(spec, boosters)


def save_models(directory: Path, outcomes: OutcomeModels | None, propensity: PropensityModel | None) -> Path:
    """Write every booster as ``<model>_fold<k>.txt`` and the manifest naming them (``manifest.json``)."""
    directory.mkdir(parents=True, exist_ok=True)
    spec, boosters = manifest(outcomes, propensity)
    for name, fold_boosters in boosters.items():
        spec["models"][name]["files"] = []
        for k, booster in enumerate(fold_boosters):
            booster.save_model(str(directory / f"{name}_fold{k}.txt"))
            spec["models"][name]["files"].append(f"{name}_fold{k}.txt")
    (directory / MANIFEST).write_text(json.dumps(spec, indent=2))
    return directory


def load_models(directory: Path) -> tuple[Boosters, dict[str, Any]]:
    """Boosters by model name (one per fold) and the manifest of a ``models/`` folder (`outcome_models` and
    `propensity_model` turn them into models that predict)."""
    spec = json.loads((directory / MANIFEST).read_text())
    boosters = {name: [lgb.Booster(model_file=str(directory / f)) for f in entry["files"]] for name, entry in spec["models"].items()}
    return boosters, spec
