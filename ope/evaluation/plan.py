"""What a run computes, decided before any data is read: estimators, interval method, baseline, and the notes
every run writes the same way."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from estimators import ESTIMATORS, ArmPooled, BaseEstimator, Bootstrap, EmpiricalBernstein, Normal, SkewCorrected
from estimators.inference import Inference
from ope.config import ExperimentConfig
from ope.data.overlap import OverlapFinding
from ope.errors import ConfigError
from ope.models.propensity import PropensityModel
from ope.text import count as plural

__all__ = ["PREFERENCE", "Plan", "build_estimators", "build_inference", "estimated_note", "interval_methods", "fallback_note", "no_feedback_note",
           "primary_estimator", "sample_note"]

#: in a run, the tunable estimators choose their hyperparameter from the data
RUN_SETTINGS: dict[str, dict[str, str]] = {"SwitchDR": {"threshold": "auto"}, "DRos": {"shrinkage": "auto"}}
#: the estimator headlines quote: the first of these the run computes
PREFERENCE = ("DR", "SNDR", "DRos", "SwitchDR", "SNIPS", "IPS", "DM")


def primary_estimator(estimators: list[str] | tuple[str, ...]) -> str:
    """The estimator headlines quote: the most robust one the run computed."""
    return next((e for e in PREFERENCE if e in estimators), estimators[0])


def build_inference(cfg: ExperimentConfig) -> Inference:
    """The interval method of [evaluation] inference."""
    kind = cfg.evaluation.inference
    if kind == "normal":
        return Normal()
    if kind == "skew":
        return SkewCorrected()
    if kind == "bootstrap":
        return Bootstrap(n_replicates=cfg.evaluation.bootstrap_replicates)
    if kind == "bernstein":
        return EmpiricalBernstein()
    if kind == "arm-pooled":
        return ArmPooled()
    raise ConfigError(f"{cfg.source}: [evaluation] inference must be skew, normal, arm-pooled, bootstrap or bernstein. "
                      f"Got '{kind}'.")


#: what each interval method of [evaluation] inference is, as the report and summary.json state it
INFERENCE_METHODS = {
    "skew": "skew-corrected normal (Hall 1992: the estimate's skewness from third moments; never narrower than normal)",
    "normal": "normal (delta-method standard error)",
    "bootstrap": "percentile Poisson bootstrap",
    "bernstein": "empirical Bernstein (conservative)",
    "arm-pooled": "the larger of the empirical and the arm-pooled variance (each arm's residual spread from every request "
                  "logged on it), the interval moved by Cornish–Fisher quantiles for the estimate's skew, for DR, SwitchDR "
                  "and DRos at a fixed level; skew-corrected for the others",
}


def interval_methods(cfg: ExperimentConfig) -> dict[str, str]:
    """The interval method behind each kind of interval a run reports."""
    return {"estimates": INFERENCE_METHODS.get(cfg.evaluation.inference, cfg.evaluation.inference),
            "breakdowns": INFERENCE_METHODS["normal"] + ", per period, model and task",
            "certificates": "one-sided bound of DR at 1 − certify_alpha, by the estimates' method"}


def build_estimators(cfg: ExperimentConfig) -> list[BaseEstimator]:
    """The estimators of [evaluation] estimators, tunable ones choosing their hyperparameter from the data."""
    out = []
    for name in cfg.evaluation.estimators:
        if name not in ESTIMATORS:
            raise ConfigError(f"{cfg.source}: unknown estimator '{name}' (known: {', '.join(ESTIMATORS)}).")
        out.append(ESTIMATORS[name](**RUN_SETTINGS.get(name, {})))
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """The estimators and intervals of a run, and the config they came from (``config`` is what the report shows)."""

    config: ExperimentConfig
    estimators: tuple[BaseEstimator, ...]
    inference: Inference

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> Plan:
        """The plan of a config (unknown estimators and interval methods are refused here)."""
        return cls(cfg, tuple(build_estimators(cfg)), build_inference(cfg))

    @property
    def baseline(self) -> str:
        """The policy every other is compared with."""
        return self.config.evaluation.baseline

    @property
    def alpha(self) -> float:
        """1 − the intervals' level."""
        return self.config.evaluation.alpha

    @property
    def headline(self) -> BaseEstimator:
        """The estimator headlines and per-group tables use (`primary_estimator`)."""
        name = primary_estimator([e.name for e in self.estimators])
        return next(e for e in self.estimators if e.name == name)

    @property
    def needs_q_hat(self) -> bool:
        """Whether an estimator needs outcome models."""
        return any(e.needs_q_hat for e in self.estimators)

    def model_based_only(self, finding: OverlapFinding, notes: list[str]) -> Plan:
        """This plan, or with DM alone and a note when the log was routed deterministically (no overlap to weight by)."""
        if not finding.deterministic:
            return self
        dropped = [e for e in self.config.evaluation.estimators if e != "DM"]
        notes.append(f"{finding.message} Importance-weighted estimators ({', '.join(dropped) or 'none'}) were not computed; "
                     "DM's numbers are only as good as the outcome models.")
        cfg = self.config
        return Plan.of(dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, estimators=("DM",))))


def estimated_note(missing: int, rows: int, model: PropensityModel) -> str:
    """The loud note of a run whose propensities were estimated."""
    return (f"PROPENSITIES WERE ESTIMATED: {missing} of {rows} rows have no logged propensity, so every row uses a "
            "cross-fitted model of the logging policy. Importance-weighted numbers are only as good as that model "
            f"(calibration error {model.diagnostics['calibration_error']:.4f}, implied mean weight of a uniform "
            f"policy {model.diagnostics['uniform_mean_weight']:.3f}, should be ≈ 1).")


def no_feedback_note() -> str:
    """The note of a log without any satisfaction feedback."""
    return ("NO SATISFACTION FEEDBACK: no successful request in the log has a satisfaction value, so satisfaction "
            "cannot be estimated and is shown as missing (failed requests alone would make it look like 0).")


def fallback_note(name: str, count: int, fallback: str) -> str:
    """The note of a policy that routed ``count`` requests by its fallback."""
    return f"{name}: {plural(count, 'request')} {'was' if count == 1 else 'were'} routed by its fallback ({fallback})."


def sample_note(train_rows: int, rows: int) -> str:
    """The note of a run whose models and learning policies saw a sample of the log."""
    return (f"Streamed: outcome and propensity models and learning policies were trained on a uniform sample of "
            f"{train_rows:,} of {rows:,} rows ([data] max_train_rows); every row was evaluated.")
