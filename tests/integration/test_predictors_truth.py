"""Learned predictors against the simulator's exact truth: DR vs IPS, DM's bias, estimated propensities.

Each of 30 seeds simulates a fresh log (5,000 rows over 2 days), cross-fits the LightGBM outcome
models and the boosted propensity model on it, and scores the estimators of one realistic target
(cheapest-eligible with 20 % uniform exploration, fitted on that log) against
``world.true_value`` on the same log's contexts: exact, no Monte-Carlo error.

Claims (see docs/experiments/dr_vs_ips.md for the measured table):

1. DR with the cross-fitted q̂ has lower RMSE than IPS (both with the logged, true propensities)
   for cost, latency and satisfaction.
2. An arm-blind q̂ (each row's predictions averaged over its eligible arms: a model that ignores
   which provider serves the request) makes DM clearly biased, while DR with the same q̂ stays
   unbiased: double robustness.
3. With the propensities dropped and estimated by `fit_propensities`, IPS's 95 % interval holds
   the truth in at least 90 % of seeds for success, satisfaction, SLA hit and cost.

Measured limitation, asserted against rather than hidden: the propensity model needs its own,
smoother settings. Fitted with the outcome models' fast settings (50 trees, learning rate 0.15,
7 leaves) it overfits the choice: held-out log-likelihood worse than the true logger's by 0.018
nats, mean importance weight of the target 1.031 instead of 1.003, IPS on success biased by
about two standard errors, and its interval covers success in only 23 % of seeds. With 3 leaves,
300 rows per leaf and learning rate 0.05 coverage is ≥ 0.97 on every metric, yet a residual
upward bias remains (the mean error of success is about one standard error; see the document).

Run ``python -m tests.integration.test_predictors_truth`` to print the tables of the document.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from estimators import DM, DR, IPS, SupportWarning
from ope.data.dataset import BanditDataset
from ope.data.schema import METRICS
from ope.models.predictors import PredictorConfig, fit_outcome_models
from ope.models.propensity import fit_propensities
from ope.simulate import simulate
from policies import Cheapest, Mixture

pytestmark = pytest.mark.slow

SLA = 10_000.0
ROWS, DAYS = 5_000, 2
SEEDS = tuple(range(5_000, 5_030))
#: outcome models: fast but good enough for DR
OUTCOME_CFG = PredictorConfig(folds=3, n_estimators=50, learning_rate=0.15, min_child_samples=10)
#: propensity model: smoother than the outcome models (the fast settings above overfit the choice)
PROPENSITY_CFG = PredictorConfig(folds=3, n_estimators=100, learning_rate=0.05,
                                 propensity_leaves=3, propensity_min_child_samples=300)
EPSILON = 0.2

ESTIMATES = ("IPS", "DR", "DM", "DM_blind", "DR_blind", "IPS_estimated")
DIAGNOSTICS = ("uniform_mean_weight", "calibration_error", "target_mean_weight", "target_mean_weight_true")

FloatArray = npt.NDArray[np.float64]


def arm_blind(q_hat: FloatArray, eligible: npt.NDArray[np.bool_]) -> FloatArray:
    """q̂ with each row's predictions replaced by their mean over the row's eligible arms."""
    mean = (q_hat * eligible[:, :, None]).sum(axis=1) / eligible.sum(axis=1)[:, None]
    return np.where(eligible[:, :, None], mean[:, None, :], 0.0)


@dataclass
class Runs:
    truth: FloatArray                 # (S, M) exact value of the target on each seed's contexts
    est: dict[str, FloatArray]        # estimate name -> (S, M, 3) value, ci_low, ci_high
    diagnostics: FloatArray           # (S, len(DIAGNOSTICS)) of the estimated propensities

    def error(self, name: str) -> FloatArray:
        return self.est[name][:, :, 0] - self.truth

    def rmse(self, name: str) -> FloatArray:
        return np.sqrt((self.error(name) ** 2).mean(axis=0))

    def z(self, name: str) -> FloatArray:
        """Mean error over the seeds in standard errors of that mean."""
        err = self.error(name)
        return err.mean(axis=0) / (err.std(axis=0, ddof=1) / np.sqrt(len(err)))

    def coverage(self, name: str) -> FloatArray:
        res = self.est[name]
        return ((res[:, :, 1] <= self.truth) & (self.truth <= res[:, :, 2])).mean(axis=0)


@dataclass
class Seed:
    """One seed's row of `Runs`."""

    truth: FloatArray                 # (M,)
    est: dict[str, FloatArray]        # estimate name -> (M, 3)
    diagnostics: FloatArray           # (len(DIAGNOSTICS),)


def run_seed(seed: int) -> Seed:
    """Simulate, fit q̂ and π̂0, estimate, record the exact truth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupportWarning)
        sim = simulate(ROWS, days=DAYS, seed=seed)
        ds = BanditDataset.from_frames(sim.logs, sim.catalog, sla_latency_ms=SLA)
        pi = Mixture(policy=Cheapest(), epsilon=EPSILON).fit(ds).action_probabilities(ds)
        value = sim.world.true_value(pi, SLA)
        q = fit_outcome_models(ds, OUTCOME_CFG).q_hat
        blind = arm_blind(q, ds.eligible)
        pm = fit_propensities(ds, PROPENSITY_CFG)
        fb = ds.to_feedback()
        runs = {
            "IPS": IPS().estimate(fb, target=pi),
            "DR": DR().estimate(fb, target=pi, q_hat=q),
            "DM": DM().estimate(fb, target=pi, q_hat=q),
            "DM_blind": DM().estimate(fb, target=pi, q_hat=blind),
            "DR_blind": DR().estimate(fb, target=pi, q_hat=blind),
            "IPS_estimated": IPS().estimate(ds.to_feedback(propensities=pm.propensities), target=pi),
        }
    logged = pi[np.arange(ds.n), ds.actions]
    return Seed(
        truth=np.array([value[m] for m in METRICS]),
        est={name: np.stack([r.value, r.ci_low, r.ci_high], axis=1) for name, r in runs.items()},
        diagnostics=np.array([
            pm.diagnostics["uniform_mean_weight"],
            pm.diagnostics["calibration_error"],
            float(np.average(logged / pm.propensities, weights=ds.sample_weight)),
            float(np.average(logged / ds.propensities, weights=ds.sample_weight)),
        ]),
    )


def combine(seeds: list[Seed]) -> Runs:
    """The seeds stacked in order."""
    return Runs(np.stack([s.truth for s in seeds]), {name: np.stack([s.est[name] for s in seeds]) for name in ESTIMATES},
                np.stack([s.diagnostics for s in seeds]))


@pytest.fixture(scope="module")
def runs(shared_map: Callable[[str, tuple[int, ...], Callable[[int], Seed]], list[Seed]]) -> Runs:
    return combine(shared_map("predictors-truth", SEEDS, run_seed))


def _by_metric(values: FloatArray, digits: int = 3) -> dict[str, float]:
    return {m: round(float(v), digits) for m, v in zip(METRICS, values, strict=True)}


def test_dr_with_learned_q_hat_beats_ips_on_rmse(runs: Runs) -> None:
    ratio = runs.rmse("DR") / runs.rmse("IPS")
    for metric in ("cost_usd", "latency_ms", "satisfaction"):
        j = METRICS.index(metric)
        assert ratio[j] < 1.0, (metric, _by_metric(ratio))


def test_dm_with_an_arm_blind_model_is_biased_and_dr_is_not(runs: Runs) -> None:
    z_dm, z_dr = runs.z("DM_blind"), runs.z("DR_blind")
    visible = [m for m in ("cost_usd", "latency_ms", "throughput_tps") if abs(z_dm[METRICS.index(m)]) > 4]
    assert visible, _by_metric(z_dm, 2)
    assert (np.abs(z_dr) < 4).all(), _by_metric(z_dr, 2)


def test_ips_with_estimated_propensities_covers_the_truth(runs: Runs) -> None:
    coverage = runs.coverage("IPS_estimated")
    diag = dict(zip(DIAGNOSTICS, runs.diagnostics.mean(axis=0).round(4), strict=True))
    report = {"coverage": _by_metric(coverage), "z": _by_metric(runs.z("IPS_estimated"), 2), **diag}
    for metric in ("success", "satisfaction", "sla_hit", "cost_usd"):
        assert coverage[METRICS.index(metric)] >= 0.90, (metric, report)


def _table(runs: Runs) -> str:
    """The tables of docs/experiments/dr_vs_ips.md."""
    lines = ["| metric | truth (mean) | IPS RMSE | DR RMSE | DR / IPS | DM RMSE |", "|---|---|---|---|---|---|"]
    for j, m in enumerate(METRICS):
        ips, dr, dm = runs.rmse("IPS")[j], runs.rmse("DR")[j], runs.rmse("DM")[j]
        lines.append(f"| {m} | {runs.truth[:, j].mean():.4g} | {ips:.3g} | {dr:.3g} | {dr / ips:.2f} | {dm:.3g} |")
    lines += ["", "| metric | z DM (LightGBM q̂) | z DR (LightGBM q̂) | z DM (arm-blind q̂) | z DR (arm-blind q̂) | z IPS |",
              "|---|---|---|---|---|---|"]
    for j, m in enumerate(METRICS):
        zs = [runs.z(n)[j] for n in ("DM", "DR", "DM_blind", "DR_blind", "IPS")]
        lines.append(f"| {m} | " + " | ".join(f"{z:+.1f}" for z in zs) + " |")
    header = ("| metric | coverage IPS (true p) | coverage IPS (estimated p) | z IPS (estimated p) "
              "| mean error / truth | mean error / mean half-width |")
    lines += ["", header, "|---|---|---|---|---|---|"]
    for j, m in enumerate(METRICS):
        e, err = runs.est["IPS_estimated"], runs.error("IPS_estimated")[:, j].mean()
        rel = err / ((e[:, j, 2] - e[:, j, 1]) / 2).mean()
        lines.append(f"| {m} | {runs.coverage('IPS')[j]:.2f} | {runs.coverage('IPS_estimated')[j]:.2f} | "
                     f"{runs.z('IPS_estimated')[j]:+.1f} | {err / runs.truth[:, j].mean():+.2%} | {rel:+.2f} |")
    d = runs.diagnostics
    lines += ["", "| diagnostic (estimated propensities) | mean | min | max |", "|---|---|---|---|"]
    lines += [f"| {name} | {d[:, i].mean():.4f} | {d[:, i].min():.4f} | {d[:, i].max():.4f} |" for i, name in enumerate(DIAGNOSTICS)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table(combine([run_seed(seed) for seed in SEEDS])))
