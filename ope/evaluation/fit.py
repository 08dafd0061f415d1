"""Fit what a run evaluates with: propensities where the log has none, outcome models, and the policies —
on the whole log (in memory) or on a training sample (streamed), by the same steps.

Policies that optimise on predicted outcomes (``cross_fit``: the constrained router) are fitted on every
training row — the rule one deploys — and once per fold on the other folds; the run evaluates the fold
copies (`policies.crossfit.CrossFitted`, folds from the row key, so every engine and batch routes a row
with the same copy), and certifies the router's targets on them (`ope.evaluation.certify`). On a
streamed sample, the copies are fitted and certified on the sample; a row outside it was seen by none.
Online routers (in memory only) are rolled over the whole log once per fold instead
(`policies.crossfit.cross_fit_rollouts`): a fold's requests take the probabilities of the rollout that read
only predictions of the models fitted without that fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ope.data.dataset import BanditDataset
from ope.data.facts import DataFacts
from ope.data.overlap import OverlapFinding
from ope.evaluation.batch import BatchRows
from ope.evaluation.certify import Certification, fit_cross_fitted
from ope.evaluation.plan import Plan, estimated_note
from ope.models.features import PairFeatures, build_features
from ope.models.predictors import OutcomeModels, fit_outcome_models, fold_q_hat
from ope.models.propensity import PropensityModel, fit_propensities
from ope.models.sample import Vocabulary
from ope.models.spread import ResidualSpread
from ope.progress import progress
from policies import Policy
from policies.base import declared_targets
from policies.crossfit import cross_fit_rollouts

__all__ = ["Fitted", "TrainingData", "drop_training_rows", "fit_run"]


@dataclass
class TrainingData:
    """What an engine's load step hands to the fit.

    ``dataset`` is the rows models and policies learn from: the whole log (``whole_log``) or a uniform
    sample of it. ``features`` are its feature blocks when they must come from the whole log (a sample's
    history and vocabulary); None builds them from ``dataset``. ``routing`` tells, on every row of the
    log, whether it was routed deterministically (asked only when propensities are estimated).
    """

    dataset: BanditDataset
    facts: DataFacts
    routing: Callable[[], OverlapFinding]
    whole_log: bool
    features: PairFeatures | None = None
    vocab: Vocabulary | None = None


@dataclass
class Fitted:
    """The plan as the data settled it, the fitted policies and models, and the notes the fit wrote.

    ``policies`` are fitted on every training row (what one deploys); ``evaluated`` are what the run
    evaluates: the same, except each ``cross_fit`` policy is its `policies.crossfit.CrossFitted` copies.
    ``evaluated_as`` says, per learning policy, how it was evaluated; ``certificates`` hold the routers'
    target certificates.
    """

    plan: Plan
    policies: dict[str, Policy]
    models: OutcomeModels | None = None
    propensity: PropensityModel | None = None
    notes: list[str] = field(default_factory=list)
    evaluated: dict[str, Policy] = field(default_factory=dict)
    evaluated_as: dict[str, str] = field(default_factory=dict)
    certificates: dict[str, Certification] = field(default_factory=dict)

    def whole_log(self, data: TrainingData) -> BatchRows:
        """The training rows as one batch: feedback with the cross-fitted propensities, and out-of-fold q̂."""
        p_hat = None if self.propensity is None else self.propensity.propensities
        return BatchRows(data.dataset, data.dataset.to_feedback(p_hat, fill_satisfaction=not data.facts.feedback),
                         None if self.models is None else self.models.q_hat)


def fit_run(plan: Plan, policies: dict[str, Policy], data: TrainingData, *, train: npt.NDArray[np.bool_] | None = None,
            needs_models: bool = False, show_progress: bool = True) -> Fitted:
    """Propensities (where missing, with the deterministic-logger check), outcome models (where an estimator or
    policy needs them, or ``needs_models``), then every policy, on ``data.dataset`` (``cross_fit`` policies also
    per fold, and certified: ``Fitted.evaluated``, ``Fitted.certificates``).

    With ``train`` (a row mask, `ope tune`), outcome models and policies learn from those rows only, and the
    other rows are scored by the mean of the fold models, which never saw them.
    """
    cfg, ds = plan.config, data.dataset
    fitted = Fitted(plan, policies)
    estimated = data.facts.missing_propensity > 0
    needs_models = needs_models or plan.needs_q_hat or any(p.needs_q_hat for p in policies.values())
    feats = data.features
    if feats is None and (estimated or needs_models):
        feats = build_features(ds, window_hours=cfg.predictors.history_hours)
    if estimated:
        fitted.propensity = fit_propensities(ds, cfg.predictors, show_progress=show_progress, features=feats)
        fitted.notes.append(estimated_note(data.facts.missing_propensity, data.facts.rows, fitted.propensity))
        # logged propensities are the logger's own word; estimated ones need overlap, judged on every row
        fitted.plan = plan.model_based_only(data.routing(), fitted.notes)
        needs_models = needs_models or fitted.plan.needs_q_hat
    if needs_models:
        fitted.models = fit_outcome_models(ds, cfg.predictors, train=train, features=feats, show_progress=show_progress)
        _hand_over_tails(policies, ds, fitted.models)
    rows = fitted.whole_log(data)
    if train is not None:
        rows = BatchRows(ds.subset(train), rows.feedback.subset(train), None if rows.q_hat is None else rows.q_hat[train])
    _fit_policies(fitted, rows, data, show_progress)
    return fitted


def _hand_over_tails(policies: dict[str, Policy], ds: BanditDataset, models: OutcomeModels) -> None:
    """Policies with p95 targets (the constrained router's max_p95_*) get the residual spread of the TTFT and latency
    models, fitted on the models' own training rows with out-of-fold q̂."""
    tailed = [p for p in policies.values() if any(t.quantile is not None for t in declared_targets(p))]
    if tailed:
        model = ResidualSpread.fit(ds, models.q_hat, models.folds >= 0).tail_model()
        for policy in tailed:
            policy.use_tail_model(model)  # type: ignore[attr-defined]


def _fit_policies(fitted: Fitted, rows: BatchRows, data: TrainingData, show_progress: bool) -> None:
    """Every policy on ``rows``; ``cross_fit`` policies also once per fold (and certified where they ask), online
    routers also rolled out once per fold on predictions that never saw it."""
    folds, sample = fitted.plan.config.predictors.folds, "" if data.whole_log else " of the training sample"
    weighted = any(e.name != "DM" for e in fitted.plan.estimators)
    with progress("fitting policies", total=len(fitted.policies), enabled=show_progress) as bar:
        for name, policy in fitted.policies.items():
            fitted.evaluated[name] = policy
            if policy.cross_fit and not policy.online:
                fitted.evaluated[name], cert = fit_cross_fitted(policy, rows, folds, weighted=weighted, feedback=data.facts.feedback,
                                                                   inference=fitted.plan.inference)
                fitted.evaluated_as[name] = (f"cross-fitted ({folds} folds): each request routed by a copy fitted on the other "
                                             f"folds{sample}; policies/{name}.json is the rule fitted on all of them")
                if cert is not None:
                    fitted.certificates[name] = cert
            elif policy.online and fitted.models is not None and rows.dataset is data.dataset:
                models = fitted.models
                fitted.evaluated[name] = cross_fit_rollouts(policy, rows.dataset, models.q_hat, models.folds,
                                                            lambda f, m=models: fold_q_hat(m, rows.dataset, f))
                fitted.evaluated_as[name] = (f"cross-fitted ({folds} folds): each request routed by a rollout over the whole log "
                                             "in arrival order that read only the predictions of models fitted without "
                                             f"its fold; policies/{name}.json is the router rolled over every row's out-of-fold q̂")
            else:
                policy.fit(rows.dataset, rows.q_hat)
                if policy.online:
                    fitted.evaluated_as[name] = ("not cross-fitted (models fitted on a window): its rollout reads no logged "
                                                 "outcome, only q̂, in arrival order")
                elif policy.learns:
                    fitted.evaluated_as[name] = f"fitted on every row{sample} (it learns per-arm summaries, not per-request choices)"
            bar.update(1)


def drop_training_rows(fitted: Fitted) -> None:
    """Free the training sample's q̂ and features once the fit is done (a streamed run keeps only what the report saves)."""
    if fitted.models is not None:
        models = fitted.models
        models.q_hat = models.q_hat[:0]
        models.features = models.features.empty()
    if fitted.propensity is not None:
        model = fitted.propensity
        model.probabilities, model.propensities = model.probabilities[:0], model.propensities[:0]
        model.features = model.features.empty()

