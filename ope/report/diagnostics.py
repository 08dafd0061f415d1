"""The report's diagnostics a reader can act on: weights per policy, estimator settings, outcome-model quality."""

from __future__ import annotations

from typing import Any

from ope.evaluation.weights import BIN_LABELS
from ope.report.markup import esc, num, table

__all__ = ["diagnostics_section", "models_section"]

WEIGHTLESS = frozenset({"DM"})          # estimators that use no importance weights
#: which logged metrics each outcome model feeds (cost: price × predicted tokens × success probability)
MODEL_USES = {"success": "success, cost", "satisfaction": "satisfaction", "sla_hit": "SLA hit", "log_ttft": "TTFT",
              "log_latency": "latency", "log_output_tokens": "cost", "log_tps": "throughput"}
WEAK_AUC = 0.65
CALIBRATION_TOLERANCE = 0.10


def _policy_weights(diag: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The weight statistics of a policy: the same for every weighting estimator, so read once."""
    return next((d for name, d in diag.items() if name not in WEIGHTLESS), None)


def _histogram(shares: dict[str, float] | None) -> list[str]:
    if not shares:
        return ["–"] * len(BIN_LABELS)
    return [f"{100 * shares[b]:.1f} %" if shares[b] > 0 else "–" for b in BIN_LABELS]


def _weights_table(info: dict[str, Any]) -> str:
    rows = []
    for policy, diag in info["diagnostics"].items():
        d = _policy_weights(diag)
        if d is None:
            continue
        n = info["data"]["rows"]
        share = d["ess"] / n if n else float("nan")
        ess = f"{d['ess']:,.0f}<br><span class='{'bad' if share < 0.05 else 'muted'}'>{share:.1%} of n</span>"
        flag = "<span class='bad'>yes</span>" if d["mean_weight_flag"] else "no"
        rows.append([esc(policy), ess, num(d["max_weight"]), f"{d['mean_weight']:.3f} ± {d['mean_weight_se']:.3f}", flag,
                     f"{d['unsupported_share']:.2%}", *_histogram(info.get("weight_shares", {}).get(policy))])
    if not rows:
        return "<p>No estimator of this run uses importance weights.</p>"
    head = ["policy", "ESS", "max weight", "mean weight", "flagged", "unsupported mass", *(f"w {esc(b)}" for b in BIN_LABELS)]
    return ("<p class='muted'>Importance weights w = π(a|x) / p on the logged arm, the same for every estimator that uses "
            "them (DM uses none). ESS as a share of the n logged rows: below 5 % an IPS-type estimate rests on a few requests. "
            "Then the share of requests in each weight range: w = 0 rows tell IPS nothing; a visible share at w ≥ 10 makes "
            "IPS and DR noisy, and SNIPS or SNDR the safer read.</p>" + table(head, rows))


def _estimator_table(info: dict[str, Any]) -> str:
    """Only what differs between estimators: a tuned setting, rows it changed, warnings of that estimator alone."""
    rows = []
    for policy, diag in info["diagnostics"].items():
        common = set((_policy_weights(diag) or {}).get("warnings", []))
        for name, d in diag.items():
            own = [w for w in d["warnings"] if w not in common] if name not in WEIGHTLESS else []
            if d["hyperparameter"] is None and not d["n_modified"] and not own:
                continue
            setting = esc(d["hyperparameter"]) if d["hyperparameter"] is not None else "–"
            rows.append([esc(policy), esc(name), setting, f"{d['n_modified']:,}", "<br>".join(esc(w) for w in own) or "–"])
    if not rows:
        return ""
    return ("<h3>Estimator settings</h3><p class='muted'>Clip levels, Switch-DR thresholds and DRos shrinkage chosen from the "
            "data, and how many rows they changed.</p>"
            + table(["policy", "estimator", "setting", "rows changed", "warnings"], rows, left=2))


def diagnostics_section(info: dict[str, Any]) -> str:
    """Weights per policy (once, not per estimator), then what differs by estimator."""
    return _weights_table(info) + _estimator_table(info)


def _model_row(name: str, q: dict[str, float]) -> list[str]:
    notes = []
    if "auc" in q and q["auc"] < WEAK_AUC:
        notes.append(f"weak (AUC < {WEAK_AUC})")
    ratio = q.get("mean_ratio")
    if ratio is not None and abs(ratio - 1) > CALIBRATION_TOLERANCE:
        notes.append(f"mean off by {ratio - 1:+.0%}")
    cell = lambda key, fmt: fmt.format(q[key]) if key in q else "–"
    verdict = f"<span class='bad'>{esc('; '.join(notes))}</span>" if notes else "<span class='good'>ok</span>"
    return [esc(name), esc(MODEL_USES.get(name, "")), cell("auc", "{:.3f}"), cell("log_loss", "{:.3f}"), cell("mae_log", "{:.3f}"),
            cell("mae", "{:,.4g}"), cell("mean_ratio", "{:.3f}"), verdict]


def models_section(info: dict[str, Any]) -> str:
    """Held-out quality of the outcome models behind DM, DR and their relatives, or nothing when none were fitted."""
    quality = info.get("model_quality")
    if not quality:
        return ""
    rows = [_model_row(name, q) for name, q in quality.items()]
    head = ["model", "feeds", "AUC", "log loss", "MAE (log scale)", "MAE", "mean predicted / observed", "verdict"]
    return ("<h3>Outcome models behind the model-based numbers</h3><p class='muted'>Held-out (cross-fitted) quality. DM is only "
            "as good as these models; DR corrects their errors with the weights, so a weak model makes DR lean on the weights "
            "(compare it with SNIPS). AUC 0.5 is chance; a mean ratio away from 1 is a biased model.</p>" + table(head, rows))
