"""Every estimator at once: the batch prepared once, one pass over its rows, one bootstrap for all.

`evaluate_all` gives the same `Estimate`s as one `estimate` (or `estimate_difference`) call per
estimator, to rounding. The target, its importance weights and q̂ are prepared once
(`estimators.batch.prepare`); each block of rows is turned into every estimator's per-row columns,
which are reduced side by side in one `Sums`, so the Poisson(1) bootstrap multipliers of a row
(keyed by the row, `estimators.resample`) are drawn once and multiply the columns of every
estimator and metric in one matrix product. The sums then split into one `Partial` per estimator:
`partial_all` / `accumulate_all` give them as a mergeable `Partials` (add them across batches or
workers), `finalize_all` turns them into estimates.

The rows are reduced with one BLAS thread: a block's products are many and small (a Gram matrix per
metric, a (B × 524) @ (524 × S) bootstrap product per 524 rows), and on a shared 2-core machine two
BLAS threads waiting on each other made the normal table 4–6× and the bootstrap 2.5× slower.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from estimators._errors import EstimatorInputError
from estimators.armpooled import ArmSums
from estimators.base import CELLS_PER_CHUNK, MIN_CHUNK_ROWS, BaseEstimator, Partial, _pairs, _units
from estimators.batch import Batch, Prepared, prepare
from estimators.estimate import Estimate
from estimators.feedback import BanditFeedback
from estimators.inference import Inference, Normal
from estimators.reduction import Sums
from estimators.statistic import Kind
from estimators.target import SparseTarget

__all__ = ["Partials", "accumulate_all", "evaluate_all", "finalize_all", "partial_all"]

KINDS: tuple[Kind, ...] = ("value", "difference", "relative")


@dataclass(frozen=True, slots=True)
class Partials(Mapping[str, Partial]):
    """Mergeable partial sums of several estimators on the same rows, by estimator name: add them, then `finalize_all`."""

    estimators: tuple[BaseEstimator, ...]
    parts: tuple[Partial, ...]

    def __getitem__(self, name: str) -> Partial:
        for part in self.parts:
            if part.estimator == name:
                return part
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (part.estimator for part in self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def __add__(self, other: Partials) -> Partials:
        if self.estimators != other.estimators:
            mine, theirs = [repr(e) for e in self.estimators], [repr(e) for e in other.estimators]
            msg = f"Only partial sums of the same estimators can be merged. Got {mine} and {theirs}."
            raise EstimatorInputError(msg)
        return Partials(self.estimators, tuple(a + b for a, b in zip(self.parts, other.parts, strict=True)))


def _check_estimators(estimators: Sequence[BaseEstimator]) -> tuple[BaseEstimator, ...]:
    """The estimators as a tuple: at least one, each a `BaseEstimator`, their names distinct (they key the results)."""
    chosen = tuple(estimators)
    if not chosen or not all(isinstance(e, BaseEstimator) for e in chosen):
        msg = f"estimators must be a non-empty sequence of estimators such as [IPS(), DR()]. Got {estimators!r}."
        raise EstimatorInputError(msg)
    names = [e.name for e in chosen]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        msg = f"estimators must have distinct names: results are keyed by name. Got {repeated} more than once."
        raise EstimatorInputError(msg)
    return chosen


def accumulate_all(
    batch: Batch, estimators: Sequence[BaseEstimator], *, relative: bool = False, n_boot: int = 0, seed: int = 0,
    arm_sums: bool = False,
) -> Partials:
    """Every estimator's partial sums on a batch prepared once, in one pass over its rows and one bootstrap.

    Equal (to rounding) to ``estimator.accumulate(batch, ...)`` for each estimator; the columns of all
    of them are reduced side by side and split afterwards (`Sums.block`).
    """
    chosen = _check_estimators(estimators)
    for est in chosen:
        est._check_batch(batch)
    kind: Kind = "value" if batch.baseline is None else ("relative" if relative else "difference")
    policies = [batch.target] + ([batch.baseline] if batch.baseline is not None else [])
    levels = [est._levels() for est in chosen]
    widths = [3 * len(policies) * len(lv) for lv, _ in levels]
    starts = [0, *accumulate(widths)]
    pairs = np.concatenate([_pairs(len(lv), 3 * len(policies), auto) + start
                            for (lv, auto), start in zip(levels, starts, strict=False)])
    units = np.concatenate([_units(len(lv), 3 * len(policies)) + start for (lv, _), start in zip(levels, starts, strict=False)])
    fb = batch.fb
    varying = sum(est._n_varying(policies, lv) for est, (lv, _) in zip(chosen, levels, strict=True))
    step = max(MIN_CHUNK_ROWS, CELLS_PER_CHUNK // (max(varying, 1) * fb.n_metrics))
    total: Sums | None = None
    pooled: list[ArmSums | None] = [None] * len(chosen)
    with threadpool_limits(limits=1, user_api="blas"):  # many small products: see the module's notes
        for start in range(0, fb.n, step):
            sl = slice(start, start + step)
            x, constants = _columns(chosen, [prep.rows(sl) for prep in policies], [lv for lv, _ in levels])
            part = Sums.of(x, np.ascontiguousarray(policies[0].weights[sl].T), pairs=pairs, constants=constants,
                           keys=fb.keys[sl], n_boot=n_boot, seed=seed, units=units)
            total = part if total is None else total + part
            for e, (est, (lv, _)) in enumerate(zip(chosen, levels, strict=True)):
                if arm_sums and (arms := est._arm_sums(batch, policies, lv, sl)) is not None:
                    pooled[e] = arms if pooled[e] is None else pooled[e] + arms
    assert total is not None
    parts = tuple(est._partial(batch, kind, replace(total.block(lo, hi), pooled=own), n_boot=n_boot, seed=seed, arm_sums=arm_sums)
                  for est, lo, hi, own in zip(chosen, starts, starts[1:], pooled, strict=False))
    return Partials(chosen, parts)


def _columns(estimators: tuple[BaseEstimator, ...], policies: list[Prepared], levels: list[tuple[float | None, ...]]
             ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The varying columns (M, V, rows) of every estimator side by side, and the constants of all their columns."""
    blocks = [est._columns(policies, lv) for est, lv in zip(estimators, levels, strict=True)]
    m, n = blocks[0][0].shape[0], blocks[0][0].shape[2]
    x = np.empty((m, sum(b.shape[1] for b, _ in blocks), n))  # C order: every reduction runs along contiguous rows
    return np.concatenate([b for b, _ in blocks], axis=1, out=x), np.concatenate([c for _, c in blocks])


def partial_all(
    fb: BanditFeedback,
    *,
    target: npt.ArrayLike | SparseTarget,
    estimators: Sequence[BaseEstimator],
    baseline: npt.ArrayLike | SparseTarget | None = None,
    q_hat: npt.ArrayLike | None = None,
    relative: bool = False,
    n_boot: int = 0,
    seed: int = 0,
    arm_sums: bool = False,
) -> Partials:
    """Mergeable sums of every estimator on one batch of rows (value, or difference / relative with a baseline)."""
    chosen = _check_estimators(estimators)
    for est in chosen:
        if est.needs_q_hat and q_hat is None:
            msg = f"{type(est).__name__} needs q_hat, the reward model's predictions of shape (n, K[, M])."
            raise EstimatorInputError(msg)
    needs_q = any(est.needs_q_hat for est in chosen)
    batch = prepare(fb, target=target, baseline=baseline, q_hat=q_hat if needs_q else None)
    return accumulate_all(batch, chosen, relative=relative, n_boot=n_boot, seed=seed, arm_sums=arm_sums)


def finalize_all(
    partials: Partials, *, inference: Inference | None = None, alpha: float = 0.05, kind: Kind | None = None
) -> dict[str, Estimate]:
    """Every estimator's `Estimate` from (merged) `Partials`, by name; ``kind`` as in `BaseEstimator.finalize`."""
    return {est.name: est.finalize(part, inference=inference, alpha=alpha, kind=kind)
            for est, part in zip(partials.estimators, partials.parts, strict=True)}


def evaluate_all(
    fb: BanditFeedback,
    *,
    target: npt.ArrayLike | SparseTarget,
    estimators: Sequence[BaseEstimator],
    q_hat: npt.ArrayLike | None = None,
    baseline: npt.ArrayLike | SparseTarget | None = None,
    kind: Kind | None = None,
    inference: Inference | None = None,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Every estimator's estimate of ``target`` (n, K) at once, by estimator name.

    ``kind`` is "value" (the default without a baseline: as ``estimate``), "difference" (the default
    with ``baseline``) or "relative" (both as ``estimate_difference``, target − baseline on the same rows).

    Examples
    --------
    >>> import numpy as np
    >>> from estimators import DM, IPS, BanditFeedback, evaluate_all
    >>> fb = BanditFeedback(actions=np.array([0, 1]), rewards=np.array([1.0, 0.0]), propensities=np.array([0.5, 0.5]))
    >>> out = evaluate_all(fb, target=np.array([[1.0, 0.0], [1.0, 0.0]]), q_hat=np.array([[0.8, 0.1], [0.6, 0.2]]),
    ...                    estimators=[IPS(), DM()])
    >>> round(out["IPS"].value, 12), round(out["DM"].value, 12)
    (1.0, 0.7)
    """
    if kind is None:
        kind = "value" if baseline is None else "difference"
    if kind not in KINDS:
        raise EstimatorInputError(f"kind must be one of {list(KINDS)}. Got {kind!r} instead.")
    if (kind == "value") != (baseline is None):
        msg = (f"kind={kind!r} needs a baseline." if baseline is None else
               "kind='value' takes no baseline: pass kind='difference' or 'relative', or use partial_all and "
               "finalize_all(kind=...) to get all three kinds from one pass.")
        raise EstimatorInputError(msg)
    inference = Normal() if inference is None else inference
    parts = partial_all(fb, target=target, estimators=estimators, baseline=baseline, q_hat=q_hat,
                        relative=kind == "relative", n_boot=inference.n_boot, seed=inference.seed, arm_sums=inference.arm_sums)
    return finalize_all(parts, inference=inference, alpha=alpha, kind=kind)
