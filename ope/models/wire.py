"""Fitted policies and outcome models as text, to ship them to distributed workers without pickle.

Policies with a ``to_json`` (constrained, MESS+, StageRoute) travel as that JSON; the baselines,
whose fitted state is a few dictionaries, as their settings plus fitted attributes; an ε-mixture
as its ε and its inner policy. Outcome models travel as LightGBM model strings with their
per-fold corrections (`OutcomeModels` minus the training sample's q̂ and features).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

import lightgbm as lgb
import numpy as np

from ope.models.features import PairFeatures
from ope.models.predictors import OutcomeModels, PredictorConfig
from ope.models.propensity import PropensityModel
from policies import Mixture, Policy

__all__ = ["models_from_text", "models_to_text", "policy_from_json", "policy_to_json", "propensity_from_text",
           "propensity_to_text"]

#: only classes of these packages are rebuilt from text
_PACKAGES = ("policies.",)


def _class_name(obj: object) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _class(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith(_PACKAGES):
        raise ValueError(f"Refusing to rebuild a policy of class {name!r}: only classes from {_PACKAGES} are allowed.")
    return getattr(importlib.import_module(module), qualname)  # type: ignore[no-any-return]


def policy_to_json(policy: Policy) -> str:
    """A fitted policy as JSON text (`policy_from_json` rebuilds one that routes identically)."""
    if isinstance(policy, Mixture):
        data: dict[str, Any] = {"class": _class_name(policy), "name": policy.name, "epsilon": policy.epsilon,
                                "policy": policy_to_json(policy.policy)}
    elif hasattr(policy, "to_json"):
        data = {"class": _class_name(policy), "json": policy.to_json()}
    elif dataclasses.is_dataclass(policy):
        settings = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy) if f.init}
        fitted = {k: v for k, v in vars(policy).items() if k.endswith("_") and not k.startswith("_")}
        data = {"class": _class_name(policy), "settings": settings, "fitted": fitted}
    else:
        raise TypeError(f"Policy {policy.name!r} of class {_class_name(policy)} cannot be written as JSON.")
    return json.dumps(data)


def policy_from_json(text: str) -> Policy:
    """The policy `policy_to_json` wrote."""
    data = json.loads(text)
    cls = _class(data["class"])
    if cls is Mixture:
        return Mixture(policy=policy_from_json(data["policy"]), epsilon=data["epsilon"], name=data["name"])
    if "json" in data:
        return cls.from_json(data["json"])  # type: ignore[attr-defined,no-any-return]
    policy = cls(**data["settings"])
    for key, value in data["fitted"].items():
        setattr(policy, key, value)
    return policy  # type: ignore[no-any-return]


def models_to_text(models: OutcomeModels) -> str:
    """Boosters (LightGBM model strings), corrections and settings as JSON text."""
    return json.dumps({
        "boosters": {name: [b.model_to_string() for b in boosters] for name, boosters in models.boosters.items()},
        "corrections": models.corrections, "quality": models.quality, "failed_cost": models.failed_cost.tolist(),
        "config": dataclasses.asdict(models.config), "constants": models.extra.get("constants", {}),
        "names": list(models.features.names), "categorical": list(models.features.categorical),
    })


def _no_features(names: list[str], categorical: list[int]) -> PairFeatures:
    empty = np.zeros((0, 0))
    return PairFeatures(empty, empty, empty, empty, np.zeros((0, 0, 0)), tuple(names), tuple(categorical))


def models_from_text(text: str) -> OutcomeModels:
    """Outcome models that predict as the ones `models_to_text` wrote (no training q̂ or features)."""
    data = json.loads(text)
    features = _no_features(data["names"], data["categorical"])
    return OutcomeModels(
        q_hat=np.zeros((0, 0, 0)), folds=np.zeros(0, dtype=np.int64), features=features,
        boosters={name: [lgb.Booster(model_str=s) for s in strings] for name, strings in data["boosters"].items()},
        corrections=data["corrections"], quality=data["quality"], failed_cost=np.asarray(data["failed_cost"], dtype=np.float64),
        config=PredictorConfig(**data["config"]), extra={"constants": data["constants"]},
    )


def propensity_to_text(model: PropensityModel) -> str:
    """The propensity model's boosters (LightGBM model strings) and diagnostics as JSON text."""
    return json.dumps({"boosters": [b.model_to_string() for b in model.boosters], "diagnostics": model.diagnostics,
                       "names": list(model.features.names), "categorical": list(model.features.categorical)})


def propensity_from_text(text: str) -> PropensityModel:
    """A propensity model that predicts as the one `propensity_to_text` wrote (no training rows)."""
    data = json.loads(text)
    return PropensityModel(np.zeros((0, 0)), np.zeros(0), [lgb.Booster(model_str=s) for s in data["boosters"]],
                           _no_features(data["names"], data["categorical"]), data["diagnostics"])
