"""The router as an MLflow pyfunc model: request columns in, a probability per arm and the chosen arm out.

The model is a `ope.models.router.DeployedRouter` folder (policy, catalog, outcome models, feature
vocabulary, history snapshot) logged as the artifact ``router`` of a thin `RouterModel`, with a
signature, so ``mlflow.pyfunc.load_model(uri).predict(requests)`` routes anywhere llm-ope is
installed. ``ope run`` logs one for every policy whose rule reads the outcome models (the
constrained router), and ``ope run --register NAME`` registers one in the model registry.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import polars as pl

from ope.errors import OPEError
from ope.evaluation.actions import file_stems
from ope.evaluation.run import RunResult
from ope.models.router import CHOSEN, DeployedRouter, probability_column

__all__ = ["RouterModel", "log_router", "routers_to_log", "signature"]

#: the model's code (MLflow "models from code"): the class lives in llm-ope, which must be installed where the model loads
_CODE = "import mlflow\nfrom ope.report.pyfunc import RouterModel\n\nmlflow.models.set_model(RouterModel())\n"
_TYPES = {"str": "string", "int": "long", "float": "double", "bool": "boolean", "datetime": "datetime"}


class RouterModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Loads the router folder logged as the artifact ``router``; ``predict`` routes a DataFrame of requests."""

    def load_context(self, context: Any) -> None:
        self.router = DeployedRouter.load(context.artifacts["router"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(pd.DataFrame(model_input))
        return self.router.predict(frame).to_pandas()


def signature(router: DeployedRouter) -> Any:
    """The model signature: ``request_id`` and the router's request columns in (timestamps naive, in UTC: MLflow's
    datetime); ``request_id``, ``p:<arm>`` per arm and ``arm`` out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = [ColSpec("string", "request_id")] + [ColSpec(_TYPES[k], c) for c, k in router.columns.items()]
    outputs = [ColSpec("string", "request_id")] + [ColSpec("double", probability_column(a)) for a in router.arms]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs + [ColSpec("string", CHOSEN)]))


def _requirements() -> list[str]:
    """The packages the model needs where it is loaded (llm-ope itself must be installable there)."""
    out = []
    for pkg in ("llm-ope", "mlflow", "numpy", "polars", "pandas", "pyarrow", "lightgbm", "cvxpy", "scikit-learn"):
        try:
            out.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(pkg)
    return out


def routers_to_log(result: RunResult, register: str | None) -> list[str]:
    """The policies a tracked run logs as models: each whose rule reads the outcome models, and the one to register."""
    names = [n for n, p in result.policies.items() if p.needs_q_hat and not p.online and n != result.config.evaluation.baseline]
    return names + [register] if register is not None and register not in names else names


def log_router(result: RunResult, policy: str, *, registered_name: str | None = None) -> Any:
    """Log one policy of a run as a pyfunc model ``router-<policy>`` in the active MLflow run; register it as
    ``registered_name`` if given. Returns MLflow's model info."""
    chosen = result.policies[policy]
    if chosen.online:
        raise OPEError(f"Policy '{policy}' learns online as it routes: a frozen copy is not what it would deploy, so it is not "
                       "logged as a model.")
    router = DeployedRouter.of(chosen, result.training, result.outcome_models)
    example = result.training.logs.head(3).select("request_id", *router.columns).with_columns(
        pl.col(c).dt.replace_time_zone(None) for c, k in router.columns.items() if k == "datetime")   # MLflow: naive = UTC
    with tempfile.TemporaryDirectory(prefix="ope-router-") as tmp:
        folder = router.save(Path(tmp) / "router")
        code = Path(tmp) / "router_model.py"   # a model from code: nothing is pickled
        code.write_text(_CODE)
        return mlflow.pyfunc.log_model(name=f"router-{file_stems([policy])[policy]}", python_model=str(code),
                                       artifacts={"router": str(folder)}, signature=signature(router),
                                       input_example=example.to_pandas(), pip_requirements=_requirements(),
                                       registered_model_name=registered_name)
