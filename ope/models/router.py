"""A deployable router: a fitted policy with everything it needs to route requests it has never seen.

A policy that routes on predicted outcomes (the constrained router) needs the outcome models, the
features they were trained on and the catalog; `DeployedRouter` holds them together, turns a frame
of new requests into probabilities per arm (and a chosen arm), and saves to and loads from one
folder (no pickle): ``router.json`` (the policy, the feature columns and their vocabulary, the
history snapshot), ``catalog.parquet`` and ``models/`` (`ope.models.serialization`). The MLflow
pyfunc model (`ope.report.pyfunc`) is this folder and a thin wrapper.

Features of a new request are those of training, with two things fixed at deployment: category
codes come from the training log's vocabulary (an unseen value is missing), and the recent history
of each arm (error rate, TTFT, tokens/s over the last ``history_hours``) is that at the end of the
log: re-run and re-deploy to refresh it. q̂ is the mean of the cross-fitted fold models' predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators.resample import hash_keys
from ope.data.catalog import Catalog, catalog_from_frame
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS, NEED_PREFIX, REQUIRED_COLUMNS
from ope.errors import SchemaError
from ope.models.history import US_PER_HOUR, history_block, row_values
from ope.models.predictors import OutcomeModels, mean_q_hat
from ope.models.sample import Vocabulary, batch_features
from ope.models.serialization import load_models, outcome_models, save_models
from policies import Policy
from policies.base import policy_from_json, policy_to_json

__all__ = ["CHOSEN", "DeployedRouter", "probability_column"]

FloatArray = npt.NDArray[np.float64]
#: the output column of the chosen arm (a draw from the probabilities, keyed by request_id)
CHOSEN = "arm"
#: salt of the draw of the chosen arm (independent of the cross-fitting folds, which use the same request key)
_DRAW_SALT = np.uint64(0x2545F4914F6CDD1D)
_DTYPES = {"str": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "datetime": pl.Datetime("us", "UTC")}


def probability_column(arm: str) -> str:
    """The output column of an arm's probability."""
    return f"p:{arm}"


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_numeric():
        return "float"
    return "datetime" if isinstance(dtype, pl.Datetime) else "str"


def _snapshot(ds: BanditDataset, window_hours: float) -> FloatArray:
    """(K, 3) each arm's recent history just after the last request of ``ds`` (NaN where its window holds no row)."""
    ts = ds.logs["ts"].dt.epoch("us").to_numpy()
    query = np.array([ts.max() + 1], dtype=np.int64)
    block = history_block(ts, ds.actions, row_values(ds.logs), query, ds.catalog.n_arms, int(window_hours * US_PER_HOUR),
                          np.ones((1, ds.catalog.n_arms), dtype=bool))
    return block[0]


@dataclass
class DeployedRouter:
    """A fitted policy with its catalog and, if it routes on q̂, the outcome models and the features they read.

    ``columns`` are the request columns it reads, name → kind (str, int, float, bool, datetime), in the
    training log's order; ``vocabulary`` the training values of each categorical column; ``history`` the
    (K, 3) recent history of each arm at the end of the log.
    """

    policy: Policy
    catalog: Catalog
    sla_latency_ms: float
    columns: dict[str, str]
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    history: FloatArray | None = None
    history_hours: float = 6.0
    models: OutcomeModels | None = None

    @classmethod
    def of(cls, policy: Policy, training: BanditDataset, models: OutcomeModels | None) -> DeployedRouter:
        """The router of a policy fitted on ``training`` (a run's training rows) with its outcome models."""
        base = ("ts", "model", "task", "input_tokens")
        extra = [c for c in training.context_columns if c not in base and (policy.needs_q_hat or c.startswith(NEED_PREFIX))]
        columns = {c: _kind(training.logs.schema[c]) for c in (*base, *extra)}   # without q̂: what eligibility reads
        if not policy.needs_q_hat:
            return cls(policy, training.catalog, training.sla_latency_ms, columns)
        if models is None:
            raise SchemaError(f"Policy '{policy.name}' routes on predicted outcomes: its router needs the run's outcome models.")
        vocab = Vocabulary()
        vocab.add(training.logs)
        hours = models.config.history_hours
        return cls(policy, training.catalog, training.sla_latency_ms, columns,
                   {c: sorted(v) for c, v in vocab.values.items()}, _snapshot(training, hours), hours, models)

    @property
    def arms(self) -> tuple[str, ...]:
        """The arms, in the order of the probability columns."""
        return self.catalog.arms

    def dataset(self, requests: pl.DataFrame) -> BanditDataset:
        """New requests (``request_id`` and `columns`) as a dataset: eligibility and prices in force from the catalog."""
        missing = [c for c in ("request_id", *self.columns) if c not in requests.columns]
        if missing:
            raise SchemaError(f"The router needs the request columns {missing} (it reads {['request_id', *self.columns]}).")
        frame = requests.select(pl.col("request_id").cast(pl.String), *[_cast(requests[c], c, k) for c, k in self.columns.items()])
        frame = frame.with_columns(pl.lit(None, dtype=_DTYPES[k]).alias(c) for c, k in REQUIRED_COLUMNS.items() if c not in frame.columns)
        eligible = self.catalog.eligible(frame)
        if not eligible.any(axis=1).all():
            bad = frame["request_id"].filter(pl.Series(~eligible.any(axis=1))).head(5).to_list()
            raise SchemaError(f"{int((~eligible.any(axis=1)).sum())} requests have no eligible arm in the catalog (their model "
                              f"is unknown or no arm fits their context or needs; first request_ids {bad}).")
        price_in, price_out = self.catalog.prices_at(frame["ts"])
        n = frame.height
        return BanditDataset(logs=frame, catalog=self.catalog, actions=np.zeros(n, dtype=np.int64), propensities=np.full(n, np.nan),
                             eligible=eligible, outcomes=np.full((n, len(METRICS)), np.nan), sample_weight=np.ones(n),
                             keys=frame["request_id"].hash(seed=20251001).to_numpy(), price_in=price_in, price_out=price_out,
                             sla_latency_ms=self.sla_latency_ms)

    def probabilities(self, requests: pl.DataFrame) -> FloatArray:
        """π(a|x) of the policy on new requests, (n, K) in `arms` order."""
        ds = self.dataset(requests)
        q_hat = None
        if self.models is not None and self.history is not None:
            vocab = Vocabulary()
            vocab.values = {c: set(v) for c, v in self.vocabulary.items()}
            history = np.where(ds.eligible[:, :, None], self.history[None, :, :], np.nan)
            feats = batch_features(ds, vocab, history, self.history_hours)
            if feats.names != self.models.features.names:
                raise SchemaError(f"The request columns give the features {list(feats.names)}; the models were trained on "
                                  f"{list(self.models.features.names)}.")
            q_hat = mean_q_hat(self.models, ds, feats)
        return np.asarray(self.policy.action_probabilities(ds, q_hat), dtype=np.float64)

    def predict(self, requests: pl.DataFrame) -> pl.DataFrame:
        """``request_id``, the probability of every arm (`probability_column`) and the chosen arm (`CHOSEN`), a draw
        from them keyed by the request_id (the same request always gets the same arm)."""
        pi = self.probabilities(requests)
        ids = requests["request_id"].cast(pl.String)
        u = hash_keys(ids.hash(seed=20251001).to_numpy() ^ _DRAW_SALT).astype(np.float64) / 2.0**64
        chosen = np.minimum((np.cumsum(pi, axis=1) <= u[:, None] * pi.sum(axis=1, keepdims=True)).sum(axis=1), len(self.arms) - 1)
        chosen = np.where(pi[np.arange(len(chosen)), chosen] > 0, chosen, pi.argmax(axis=1))
        probs = {probability_column(a): pi[:, k] for k, a in enumerate(self.arms)}
        return pl.DataFrame({"request_id": ids, **probs, CHOSEN: [self.arms[k] for k in chosen]})

    def save(self, folder: Path) -> Path:
        """Write the router into ``folder`` (created): ``router.json``, ``catalog.parquet`` and ``models/``."""
        folder.mkdir(parents=True, exist_ok=True)
        prices = self.catalog.prices.join(self.catalog.arms_frame.drop("price_in_per_mtok", "price_out_per_mtok", "valid_from"),
                                          on="arm")
        prices.write_parquet(folder / "catalog.parquet")
        if self.models is not None:
            save_models(folder / "models", self.models, None)
        history = None if self.history is None else [[None if np.isnan(x) else float(x) for x in row] for row in self.history]
        spec = {"format": 1, "policy": policy_to_json(self.policy), "sla_latency_ms": self.sla_latency_ms, "columns": self.columns,
                "vocabulary": self.vocabulary, "history": history, "history_hours": self.history_hours, "arms": list(self.arms)}
        (folder / "router.json").write_text(json.dumps(spec, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DeployedRouter:
        """The router `save` wrote."""
        folder = Path(folder)
        spec: dict[str, Any] = json.loads((folder / "router.json").read_text())
        models = None
        if (folder / "models").is_dir():
            boosters, manifest = load_models(folder / "models")
            models = outcome_models(manifest, boosters)
        history = None if spec["history"] is None else np.array([[np.nan if x is None else x for x in r] for r in spec["history"]])
        return cls(policy_from_json(spec["policy"]), catalog_from_frame(pl.read_parquet(folder / "catalog.parquet")),
                   spec["sla_latency_ms"], spec["columns"], spec["vocabulary"], history, spec["history_hours"], models)


def _cast(column: pl.Series, name: str, kind: str) -> pl.Series:
    """A request column as the kind training saw (timestamps: aware, or naive = UTC, or ISO 8601 text)."""
    if kind == "datetime":
        if column.dtype == pl.String:
            column = column.str.to_datetime(time_zone="UTC")
        if not isinstance(column.dtype, pl.Datetime):
            raise SchemaError(f"Request column '{name}' must be a timestamp. Got {column.dtype}.")
        column = column.dt.replace_time_zone("UTC") if column.dtype.time_zone is None else column.dt.convert_time_zone("UTC")
        return column.dt.cast_time_unit("us").alias(name)
    try:
        return column.cast(_DTYPES[kind]).alias(name)
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"Request column '{name}' must be {kind}. Got {column.dtype}: {exc}") from exc
