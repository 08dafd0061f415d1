"""``ope export``: a run's policy as a gateway can run it, evaluated as deployed next to the policy as computed.

A gateway config is coarser than a router: it routes by group (model, task, maybe input length)
with fixed weights or preferences (`policies.exported`). The export builds that policy from the
run's action probabilities (`ope.gateway`), then evaluates both on the run's log through the one
evaluation path (`run_experiment` on the run's own config): the policy *as computed* replays the
probabilities the run evaluated (its ``actions/<policy>.parquet``) and is the baseline, so each
estimate of the exported policy comes with its paired difference from it — the cost of the
approximation, with an interval.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ope.config import ExperimentConfig, load_config
from ope.data.catalog import load_catalog
from ope.data.dataset import BanditDataset
from ope.data.readers import read_table
from ope.data.schema import METRICS
from ope.data.validate import validate_logs
from ope.errors import ConfigError, OPEError
from ope.evaluation.plan import primary_estimator
from ope.evaluation.registry import policy_config
from ope.evaluation.run import RunResult, run_experiment
from ope.gateway import DEFAULT_LENGTH_EDGES, FORMATS, LABELS
from ope.gateway.groups import group_average, weights_document
from ope.gateway.litellm import litellm_config
from ope.gateway.openrouter import choose_preferences, openrouter_document
from policies import Policy
from policies.base import FloatArray, Pairs, PairwisePolicy
from policies.exported import GroupWeights, ProviderPreferences

__all__ = ["Export", "LoggedProbabilities", "RunFolder", "export_policy", "gateway_policy"]


@dataclass(frozen=True, slots=True)
class RunFolder:
    """A run's output folder: its resolved config (``config.toml``) and ``summary.json``."""

    path: Path
    config: ExperimentConfig
    summary: dict[str, Any]

    @classmethod
    def of(cls, path: str | Path) -> RunFolder:
        """Read a run folder ``ope run`` wrote; a clear error when it is not one."""
        path = Path(path)
        missing = [f for f in ("config.toml", "summary.json") if not (path / f).is_file()]
        if missing:
            raise OPEError(f"{path} is not a run folder of `ope run`: it has no {' or '.join(missing)}.")
        return cls(path, load_config(path / "config.toml"), json.loads((path / "summary.json").read_text()))

    def actions(self, policy: str) -> Path:
        """The action file of ``policy`` (the probabilities the run evaluated)."""
        files = self.summary.get("actions", {})
        if policy not in files:
            written = ", ".join(sorted(files)) or "none ([output] actions)"
            known = ", ".join(self.summary.get("policies", {}))
            raise OPEError(f"The run {self.path} has no action file for policy '{policy}' (its policies: {known}; action files "
                           f"written: {written}). Export needs the probabilities the run evaluated.")
        return self.path / files[policy]


@dataclass(kw_only=True)
class LoggedProbabilities(PairwisePolicy):
    """The probabilities a run evaluated, read back from its action file (``request_id, arm, probability``) by request."""

    name: str = "as_computed"
    path: str = ""

    def pair_probabilities(self, dataset: Any, pairs: Pairs, q_hat: FloatArray | None = None) -> FloatArray:
        ids = dataset.logs["request_id"].cast(pl.String)
        frame = pl.DataFrame({"request_id": ids.gather(pairs.rows), "arm": pl.Series(dataset.arms).gather(pairs.arms)})
        table = pl.read_parquet(self.path).with_columns(pl.col("request_id").cast(pl.String), pl.col("arm").cast(pl.String))
        pi = frame.join(table, on=["request_id", "arm"], how="left", maintain_order="left")["probability"].fill_null(0.0).to_numpy()
        short = np.abs(pairs.row_sum(pi) - 1.0) > 1e-6
        if short[pairs.filled].any():
            first = ids.gather(np.flatnonzero(short)[:5]).to_list()
            raise OPEError(f"{self.path}: the action file does not give {int(short.sum())} requests of the log probabilities summing "
                           f"to 1 over their eligible arms (first request_ids {first}): it belongs to another log or run.")
        return pi


@dataclass(frozen=True, slots=True)
class Export:
    """An exported policy, the gateway file's content, and the run evaluating it against the policy as computed."""

    policy: str
    format: str
    document: dict[str, Any]
    exported: Policy
    result: RunResult
    as_computed: str
    as_deployable: str

    @property
    def estimator(self) -> str:
        """The estimator the comparison quotes (the run's headline choice)."""
        return primary_estimator(self.result.config.evaluation.estimators)

    def comparison(self) -> pl.DataFrame:
        """Per metric: as computed, as deployable (value, interval), and their paired difference and relative change."""
        est = self.result.estimates.filter(pl.col("estimator") == self.estimator)
        cols = ["metric", "value", "ci_low", "ci_high"]

        def part(policy: str, kind: str, prefix: str) -> pl.DataFrame:
            rows = est.filter((pl.col("policy") == policy) & (pl.col("kind") == kind)).select(cols)
            return rows.rename({c: f"{prefix}_{c}" for c in cols[1:]})

        out = part(self.as_computed, "value", "computed").join(part(self.as_deployable, "value", "deployable"), on="metric")
        out = out.join(part(self.as_deployable, "difference", "difference"), on="metric", how="left")
        out = out.join(part(self.as_deployable, "relative", "relative"), on="metric", how="left")
        order = {m: i for i, m in enumerate(METRICS)}
        return out.sort(pl.col("metric").replace_strict(order, default=len(order), return_dtype=pl.Int64))


def _dense(ds: BanditDataset, actions: pl.DataFrame) -> FloatArray:
    """The (n, K) matrix of an action file's probabilities on the dataset's rows."""
    rows = pl.DataFrame({"request_id": ds.logs["request_id"].cast(pl.String), "_row": np.arange(ds.n)})
    joined = actions.with_columns(pl.col("request_id").cast(pl.String)).join(rows, on="request_id")
    out = np.zeros((ds.n, ds.catalog.n_arms))
    out[joined["_row"].to_numpy(), ds.catalog.arm_index(joined["arm"].cast(pl.String))] = joined["probability"].to_numpy()
    return out


def _gateway_policy(fmt: str, ds: BanditDataset, actions: pl.DataFrame, name: str,
                    length_edges: Sequence[int]) -> tuple[Policy, dict[str, Any]]:
    """The exported policy of a format and the content of its gateway file."""
    arms = ds.catalog.arms_frame
    if fmt == "openrouter":
        prefs = ProviderPreferences(name=name, preferences=choose_preferences(ds, _dense(ds, actions)))
        return prefs, openrouter_document(prefs, arms, ds.catalog.prices)
    edges = tuple(length_edges) if fmt == "json" else ()
    weights = GroupWeights(name=name, weights=group_average(ds.logs, ds.sample_weight, actions, edges), length_edges=edges,
                           gateway=fmt)
    return weights, litellm_config(weights, arms) if fmt == "litellm" else weights_document(weights)


def _evaluated_rows(cfg: ExperimentConfig, actions: pl.DataFrame) -> BanditDataset:
    """The run's valid log rows that its action file covers (the rows it evaluated)."""
    catalog = load_catalog(cfg.data.catalog)
    validated = validate_logs(read_table(cfg.data.logs), catalog, source=str(cfg.data.logs))
    ds = BanditDataset.from_validated(validated, catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms)
    covered = ds.logs["request_id"].cast(pl.String).is_in(actions["request_id"].cast(pl.String).implode()).to_numpy()
    if not covered.any():
        raise OPEError(f"The action file covers none of the rows of {cfg.data.logs}: the log changed since the run.")
    return ds.subset(covered)


def gateway_policy(run: RunFolder, policy: str, fmt: str, *,
                   length_edges: Sequence[int] = DEFAULT_LENGTH_EDGES) -> tuple[Policy, dict[str, Any]]:
    """The exported policy (named ``<policy> (as deployable in <gateway>)``) and its gateway file's content, built from
    the run's action probabilities on its log; ``length_edges`` cut input tokens into buckets (``json`` only)."""
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    actions = pl.read_parquet(run.actions(policy))
    name = f"{policy} (as deployable in {LABELS[fmt]})"
    return _gateway_policy(fmt, _evaluated_rows(run.config, actions), actions, name, length_edges)


def export_policy(run_dir: str | Path, policy: str, fmt: str, *, length_edges: Sequence[int] = DEFAULT_LENGTH_EDGES,
                  show_progress: bool = False) -> Export:
    """Build the gateway version of a run's policy and evaluate it, on the run's log and config, against the policy as computed.

    ``fmt`` is one of `ope.gateway.FORMATS`; ``length_edges`` cut input tokens into buckets (``json`` only).
    """
    run = RunFolder.of(run_dir)
    exported, document = gateway_policy(run, policy, fmt, length_edges=length_edges)
    computed, deployable = f"{policy} (as computed)", exported.name
    policies: dict[str, Policy] = {computed: LoggedProbabilities(name=computed, path=str(run.actions(policy).resolve())),
                                   deployable: exported}
    cfg = run.config
    scratch = Path(tempfile.mkdtemp(prefix="ope-export-"))
    try:
        data = dataclasses.replace(cfg.data, engine="local" if cfg.data.engine == "ray" else cfg.data.engine,
                                   quarantine=None if cfg.data.quarantine is None else scratch / "quarantine.parquet")
        cfg = dataclasses.replace(cfg, data=data, evaluation=dataclasses.replace(cfg.evaluation, baseline=computed),
                                  tracking=dataclasses.replace(cfg.tracking, enabled=False),
                                  policies=tuple(policy_config(n, p) for n, p in policies.items()))
        result = run_experiment(cfg, show_progress=show_progress, policies=policies)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Export(policy, fmt, document, exported, result, computed, deployable)
