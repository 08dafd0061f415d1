"""Overlap and support diagnostics as mergeable sums of importance weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from estimators.estimate import Diagnostics

__all__ = ["WeightSums"]

FloatArray = npt.NDArray[np.float64]
#: below this effective sample size (or 1 % of rows) an estimate is flagged as fragile
MIN_ESS = 100


@dataclass(frozen=True, slots=True)
class WeightSums:
    """Sums over rows of importance weights w = π(a|x)/p with sample weights s.

    ``mass`` (K,) is Σ s π(k|x) and ``played`` (K,) marks arms the logger used; ``unsupported`` is
    Σ s · (target mass where the logging distribution is zero) when that distribution is known,
    else None; ``modified`` (U,) counts rows each hyperparameter level changes.
    """

    n: int
    s: float
    sw: float
    s2w: float
    s2w2: float
    s2: float
    max_w: float
    mass: FloatArray
    played: npt.NDArray[np.bool_]
    unsupported: float | None
    modified: npt.NDArray[np.int64]

    def __add__(self, other: WeightSums) -> WeightSums:
        unsup = None if self.unsupported is None or other.unsupported is None else self.unsupported + other.unsupported
        return WeightSums(
            n=self.n + other.n,
            s=self.s + other.s,
            sw=self.sw + other.sw,
            s2w=self.s2w + other.s2w,
            s2w2=self.s2w2 + other.s2w2,
            s2=self.s2 + other.s2,
            max_w=max(self.max_w, other.max_w),
            mass=self.mass + other.mass,
            played=self.played | other.played,
            unsupported=unsup,
            modified=self.modified + other.modified,
        )

    def finalize(self, *, n_modified: int = 0, hyperparameter: float | tuple[float, ...] | None = None) -> Diagnostics:
        """Diagnostics with plain-language warnings for support and overlap problems."""
        ess = self.sw**2 / self.s2w2 if self.s2w2 > 0 else 0.0
        mean_w = self.sw / self.s
        var = (self.s2w2 - 2 * mean_w * self.s2w + mean_w**2 * self.s2) / self.s**2 * self.n / max(self.n - 1, 1)
        se = float(np.sqrt(max(var, 0.0)))
        flag = abs(mean_w - 1) > max(4 * se, 0.05)
        unsupported = self.unsupported if self.unsupported is not None else float(self.mass[~self.played].sum())
        share = unsupported / self.s
        notes = []
        if share > 0.001:
            notes.append(
                f"{share:.1%} of the target's probability is on arms the logger never played in that "
                "context; importance-weighted estimates ignore it and model-based ones extrapolate."
            )
        if flag:
            notes.append(
                f"Mean importance weight is {mean_w:.3f} (± {se:.3f}), not 1: propensities may be wrong "
                "or the target leaves the logger's support."
            )
        if ess < max(MIN_ESS, 0.01 * self.n):
            notes.append(
                f"Effective sample size is {ess:.0f} of {self.n} rows: too few for a reliable interval "
                f"(below {max(MIN_ESS, 0.01 * self.n):.0f})."
            )
        return Diagnostics(
            ess=float(ess),
            max_weight=float(self.max_w),
            mean_weight=float(mean_w),
            mean_weight_se=se,
            mean_weight_flag=bool(flag),
            unsupported_share=float(share),
            n_modified=n_modified,
            hyperparameter=hyperparameter,
            warnings=tuple(notes),
        )
