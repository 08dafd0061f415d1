"""Where a policy's gains come from: estimates per model and per task, and traffic per provider."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import polars as pl

from estimators import BanditFeedback, BaseEstimator, EstimatorInputError, SupportWarning
from ope.dataset import BanditDataset

__all__ = ["breakdowns", "provider_shares", "MIN_GROUP_ROWS"]

#: groups with fewer logged rows are not estimated (and the report says so)
MIN_GROUP_ROWS = 200


def breakdowns(
    fb: BanditFeedback,
    dataset: BanditDataset,
    probabilities: dict[str, npt.NDArray[np.float64]],
    estimator: BaseEstimator,
    q_hat: npt.NDArray[np.float64] | None,
    alpha: float,
    by: tuple[str, ...] = ("model", "task"),
) -> pl.DataFrame:
    """Value of every policy within each group of each ``by`` column (one estimator)."""
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        for column in by:
            values = dataset.logs[column].cast(pl.String)
            for group, count in values.value_counts(sort=True).iter_rows():
                mask = (values == group).to_numpy()
                if count < MIN_GROUP_ROWS:
                    rows.append({"by": column, "group": group, "policy": None, "metric": None, "value": None,
                                 "ci_low": None, "ci_high": None, "n": float(count)})
                    continue
                part = fb.subset(mask)
                for name, pi in probabilities.items():
                    try:
                        est = estimator.estimate(part, target=pi[mask], q_hat=None if q_hat is None else q_hat[mask], alpha=alpha)
                    except EstimatorInputError:
                        continue  # e.g. no overlap in this group: shown as missing
                    for j, metric in enumerate(dataset.metrics):
                        rows.append({"by": column, "group": group, "policy": name, "metric": metric,
                                     "value": float(est.value[j]), "ci_low": float(est.ci_low[j]),
                                     "ci_high": float(est.ci_high[j]), "n": float(count)})
    schema = {"by": pl.String, "group": pl.String, "policy": pl.String, "metric": pl.String, "value": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "n": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def provider_shares(dataset: BanditDataset, probabilities: dict[str, npt.NDArray[np.float64]]) -> pl.DataFrame:
    """Share of (sample-weighted) requests each policy sends to each provider; "logged" is what happened."""
    providers = dataset.catalog.arms_frame["provider"].to_numpy()
    names = sorted(set(providers))
    s = dataset.sample_weight
    logged = np.zeros(dataset.catalog.n_arms)
    np.add.at(logged, dataset.actions, s)
    per_arm = {"logged": logged / s.sum()} | {name: s @ pi / s.sum() for name, pi in probabilities.items()}
    out = {"provider": names}
    for name, share in per_arm.items():
        out[name] = [float(share[providers == p].sum()) for p in names]
    return pl.DataFrame(out)
