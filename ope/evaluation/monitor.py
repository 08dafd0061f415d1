"""Watching a randomised canary: anytime-valid confidence sequences, a verdict, and a state file to continue from.

The one place where row order matters: rows are read in time order and added to the confidence
sequences of `estimators.canary.CanaryCS` (predictable plug-in empirical-Bernstein sequences after
Waudby-Smith & Ramdas 2024, Thm 2, each side paying only for its own range: `estimators.onesided`),
which stay valid however often they are looked at. Two decision
metrics, cost per request and SLA hit rate, each get a two-sided sequence for the difference
policy − baseline at level 1 − α/2, so the verdict is wrong with probability at most α overall:

- "worse on SLA: roll back"            when the SLA difference's upper bound is < 0;
- "worse on cost: roll back"           when the cost difference's lower bound is > 0;
- "better on cost, SLA not worse"      when the cost upper bound is < 0 and the SLA lower bound > −margin;
- "undecided"                          otherwise, and monitoring goes on.

The terms are doubly robust by default (``terms = "dr"``): q̂ comes from outcome models fitted on the
config's history log only (`ope.evaluation.canary_models`), so it is predictable and the sequences
stay valid; ``"ips"`` uses the importance-weighted terms alone. Importance weights are bounded by
the canary's design (w ≤ 1/share for the policy, 1/(1 − share) for the baseline); cost needs a
declared cap (``max_cost_usd``). A row outside either bound stops the
monitor with a clear error, never a clipped number. Learning policies are fitted on the config's
``[data] logs`` (the history the offline decision was made on), never on the canary itself.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from estimators.canary import CanaryBounds, CanaryCS
from estimators.onesided import OneSidedState
from ope.config import ExperimentConfig
from ope.data.catalog import load_catalog
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.data.validate import ValidatedLogs, load_logs
from ope.errors import ConfigError, OPEError
from ope.evaluation.canary_models import canary_q_hat, history_models
from ope.evaluation.registry import build_policies
from ope.models.predictors import OutcomeModels
from policies import Policy

__all__ = ["MonitorResult", "MonitorSettings", "fitted_pair", "monitor", "verdict"]

DECIDING = ("cost_usd", "sla_hit")
UNDECIDED = "undecided"
STATE_FORMAT = "one-sided-eb/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSettings:
    """What a canary is checked against; the state file remembers them and refuses a change."""

    policy: str
    baseline: str
    share: float = 0.05
    alpha: float = 0.05
    max_cost_usd: float = 0.1
    sla_margin: float = 0.01
    sla_latency_ms: float = 10_000.0
    terms: str = "dr"

    def __post_init__(self) -> None:
        if self.terms not in ("dr", "ips"):
            raise ConfigError(f"--terms must be 'dr' or 'ips'. Got {self.terms!r}.")
        if not 0.0 < self.share < 1.0:
            raise ConfigError(f"The canary share must be in (0, 1). Got {self.share!r}.")
        if not self.max_cost_usd > 0:
            raise ConfigError(f"--max-cost-usd must be > 0. Got {self.max_cost_usd!r}.")
        if not 0.0 <= self.sla_margin < 1.0:
            raise ConfigError(f"--sla-margin must be in [0, 1). Got {self.sla_margin!r}.")

    def sequences(self) -> CanaryCS:
        """The confidence sequences: α/2 for each of the two decision metrics."""
        return CanaryCS(alpha=self.alpha / len(DECIDING), share=float(self.share), metric_high=(self.max_cost_usd, 1.0),
                        doubly_robust=self.terms == "dr")


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """Where the canary stands: rows seen, the last bounds per metric and kind, and the verdict."""

    settings: MonitorSettings
    rows: int
    new_rows: int
    skipped_rows: int
    last_ts: str | None
    bounds: dict[str, dict[str, list[float]]]
    verdict: str
    decided_at: dict[str, Any] | None


def verdict(cost: tuple[float, float], sla: tuple[float, float], sla_margin: float) -> str:
    """The decision from the (low, high) bounds of the cost and SLA-hit differences (policy − baseline).

    >>> verdict((-0.3, -0.1), (-0.005, 0.02), 0.01)
    'better on cost, SLA not worse'
    >>> verdict((-0.3, -0.1), (-0.2, -0.1), 0.01)
    'worse on SLA: roll back'
    """
    if sla[1] < 0:
        return "worse on SLA: roll back"
    if cost[0] > 0:
        return "worse on cost: roll back"
    if cost[1] < 0 and sla[0] > -sla_margin:
        return "better on cost, SLA not worse"
    return UNDECIDED


def fitted_pair(cfg: ExperimentConfig, policy: str | None) -> tuple[str, Policy, Policy]:
    """The candidate's name, the candidate and the baseline, fitted on the config's history log."""
    built = build_policies(cfg.policies, cfg.evaluation.baseline, cfg.source)
    others = [n for n in built if n != cfg.evaluation.baseline]
    if policy is None:
        if len(others) != 1:
            raise ConfigError(f"{cfg.source}: name the canary's policy with --policy (one of {others}).")
        policy = others[0]
    if policy not in others:
        raise ConfigError(f"{cfg.source}: --policy {policy!r} is not a policy of the config other than the baseline {others}.")
    pair = (built[policy], built[cfg.evaluation.baseline])
    if any(p.needs_q_hat or p.online for p in pair):
        raise ConfigError(f"ope monitor evaluates fixed policies that do not route on outcome models: '{policy}' or the "
                          "baseline does (constrained, mess_plus, stage_route).")
    if any(p.learns for p in pair):
        history = BanditDataset.load(cfg.data.logs, cfg.data.catalog, sla_latency_ms=cfg.evaluation.sla_latency_ms)
        for p in pair:
            p.fit(history, None)
    return policy, pair[0], pair[1]


def _read_new(logs: Path, cfg: ExperimentConfig, since: datetime | None, last_ts: str | None) -> tuple[pl.DataFrame, int, int]:
    """The canary log in time order, the index of its first row after ``since`` and the state's last timestamp (the
    new rows are the rest; the earlier ones still feed q̂'s recent-history features), and how many rows were skipped
    as already seen; a log that goes back in time is refused."""
    frame = load_logs(logs, load_catalog(cfg.data.catalog)).logs
    back = np.flatnonzero(np.diff(frame["ts"].dt.epoch("us").to_numpy()) < 0)
    if back.size:
        raise OPEError(f"{logs}: the canary log goes back in time at request {frame['request_id'][int(back[0]) + 1]!r}: "
                       "rows must be in arrival order.")
    if frame["propensity"].null_count():
        raise OPEError(f"{logs}: a canary log must record every row's propensity ({frame['propensity'].null_count()} rows have none).")
    if "sample_weight" in frame.columns and (frame["sample_weight"].fill_null(1.0) != 1.0).any():
        raise OPEError(f"{logs}: ope monitor needs every request of the canary (sample_weight 1 or null), not a sample.")
    new = pl.Series(np.ones(frame.height, dtype=bool))
    skipped = 0
    if last_ts is not None:
        last = datetime.fromisoformat(last_ts)
        if since is not None and since < last:
            raise OPEError(f"--since {since.isoformat()} goes back in time: the state already covers up to {last_ts}.")
        seen = frame["ts"] <= last
        skipped, new = int(seen.sum()), new & ~seen
    if since is not None:
        new = new & (frame["ts"] >= since)
    first = int(np.argmax(new.to_numpy())) if new.any() else frame.height
    return frame, first, skipped


def _weights(ds: BanditDataset, candidate: Policy, baseline: Policy) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Importance weights of the policy and of the baseline on the logged arms, and both (n, K) probability matrices."""
    rows = np.arange(ds.n)
    pi1, pi0 = candidate.action_probabilities(ds), baseline.action_probabilities(ds)
    return pi1[rows, ds.actions] / ds.propensities, pi0[rows, ds.actions] / ds.propensities, (pi1, pi0)


def _load_state(path: Path, settings: MonitorSettings) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise OPEError(f"{path} was written by another version of ope monitor (format {state.get('format')!r}, this one "
                       f"reads {STATE_FORMAT!r}); start a new --state.")
    saved = state.get("settings")
    if saved != dataclasses.asdict(settings):
        raise OPEError(f"{path} was written for other settings ({saved}); use another --state or the same settings.")
    return state


def _bounds(b: CanaryBounds, row: int) -> dict[str, dict[str, list[float]]]:
    kinds = {"value": b.value, "baseline": b.baseline, "difference": b.difference}
    return {metric: {kind: [float(lo[row, j]), float(hi[row, j])] for kind, (lo, hi) in kinds.items()}
            for j, metric in enumerate(DECIDING)}


def _first_decision(b: CanaryBounds, margin: float) -> tuple[int | None, str]:
    """The first row at which the sequences decide, and the verdict there."""
    (clo, chi), (slo, shi) = (b.difference[0][:, 0], b.difference[1][:, 0]), (b.difference[0][:, 1], b.difference[1][:, 1])
    decided = (shi < 0) | (clo > 0) | ((chi < 0) & (slo > -margin))
    if not decided.any():
        return None, UNDECIDED
    row = int(np.argmax(decided))
    return row, verdict((float(clo[row]), float(chi[row])), (float(slo[row]), float(shi[row])), margin)


def _advance(cs: CanaryCS, state: OneSidedState, frame: pl.DataFrame, data: tuple[BanditDataset, int], settings: MonitorSettings,
             pair: tuple[Policy, Policy], models: OutcomeModels | None) -> tuple[OneSidedState, dict[str, Any]]:
    """Add the rows ``first:`` of the dataset (every row read) in order, stopping at the first row where the sequences
    decide; the state and the record."""
    every, first = data
    ds = every.subset(np.arange(every.n) >= first)
    frame = frame.slice(first)
    w1, w0, probabilities = _weights(ds, *pair)
    columns = [METRICS.index(m) for m in DECIDING]
    outcomes = ds.outcomes[:, columns]
    q = None if models is None else canary_q_hat(models, every, first, columns, np.asarray(cs.metric_high), probabilities)
    new, b = cs.update(state, weight=w1, baseline_weight=w0, outcomes=outcomes, q_hat=q)
    row, decision = _first_decision(b, settings.sla_margin)
    decided_at = None
    if row is not None:  # stop at the deciding row: the verdict is the record, later rows are not added
        head = None if q is None else (q[0][: row + 1], q[1][: row + 1], q[2][: row + 1])
        new, _ = cs.update(state, weight=w1[: row + 1], baseline_weight=w0[: row + 1], outcomes=outcomes[: row + 1],
                           q_hat=head)
        decided_at = {"row": new.t, "ts": frame["ts"][row].isoformat(), "request_id": frame["request_id"][row]}
    end = frame.height - 1 if row is None else row
    return new, {"last_ts": frame["ts"][end].isoformat(), "bounds": _bounds(b, end), "verdict": decision,
                 "decided_at": decided_at}


def monitor(cfg: ExperimentConfig, logs: Path, state_path: Path, settings: MonitorSettings, *,
            candidate: Policy, baseline: Policy, since: datetime | None = None) -> MonitorResult:
    """Add the canary's new rows to the saved sequences, decide if they can, and save the state to ``state_path``.

    A state that has decided is final: later calls report its verdict and read nothing.
    """
    saved = _load_state(state_path, settings)
    cs = settings.sequences()
    state = cs.start() if saved is None else OneSidedState.from_dict(saved["sequences"])
    record: dict[str, Any] = ({"last_ts": None, "bounds": {}, "verdict": UNDECIDED, "decided_at": None} if saved is None
                              else {k: saved[k] for k in ("last_ts", "bounds", "verdict", "decided_at")})
    if record["verdict"] != UNDECIDED:
        return MonitorResult(settings, state.t, 0, 0, **record)
    frame, first, skipped = _read_new(logs, cfg, since, record["last_ts"])
    if first < frame.height:
        models = history_models(cfg, cfg.output.dir / "monitor") if settings.terms == "dr" else None
        state, record = _advance(cs, state, frame, (_dataset(frame, cfg, settings), first), settings, (candidate, baseline),
                                 models)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"format": STATE_FORMAT, "settings": dataclasses.asdict(settings), "sequences": state.to_dict(), **record}
    state_path.write_text(json.dumps(saved, indent=2))
    return MonitorResult(settings, state.t, frame.height - first, skipped, **record)


def _dataset(frame: pl.DataFrame, cfg: ExperimentConfig, settings: MonitorSettings) -> BanditDataset:
    """The kept rows (validated already) as a dataset."""
    validated = ValidatedLogs(logs=frame, problems=(), n_input=frame.height, bad_rows=frame.clear())
    return BanditDataset.from_validated(validated, load_catalog(cfg.data.catalog), sla_latency_ms=settings.sla_latency_ms)
