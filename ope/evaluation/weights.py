"""How a policy's importance weights are spread: a histogram on fixed log-scale bins, mergeable across batches.

Weights are w_i = π(a_i | x_i) / p_i on the logged arm. A weight of 0 means the policy would never
have routed that request where the logger did: the row tells IPS nothing. Weights far above 1 carry
the estimate on a few rows. The bins are fixed, so per-batch counts simply add (DESIGN §5) and a
streamed or distributed run gives the in-memory histogram exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["BIN_LABELS", "EDGES", "WeightHistogram"]

#: right edges of the bins above 0: (0, 0.1), [0.1, 0.5), [0.5, 2), [2, 10), [10, 100), [100, ∞)
EDGES = np.array([0.1, 0.5, 2.0, 10.0, 100.0])
BIN_LABELS = ("0", "(0, 0.1)", "[0.1, 0.5)", "[0.5, 2)", "[2, 10)", "[10, 100)", "≥ 100")


@dataclass
class WeightHistogram:
    """Sample-weighted mass of each policy's importance weights per bin (`BIN_LABELS`)."""

    mass: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def add(self, policy: str, w: npt.NDArray[np.float64], sample_weight: npt.NDArray[np.float64]) -> None:
        """Add one batch: ``w`` (n,) importance weights, ``sample_weight`` (n,) how many requests each row stands for."""
        bins = np.where(w <= 0, 0, 1 + np.searchsorted(EDGES, w, side="right"))
        counts = np.bincount(bins, weights=sample_weight, minlength=len(BIN_LABELS)).astype(float)
        self.mass[policy] = self.mass[policy] + counts if policy in self.mass else counts

    def merge(self, other: WeightHistogram) -> None:
        """Fold another batch's histogram into this one."""
        for policy, counts in other.mass.items():
            self.mass[policy] = self.mass[policy] + counts if policy in self.mass else counts.copy()

    def shares(self) -> dict[str, dict[str, float]]:
        """Per policy, the share of (sample-weighted) requests in each bin."""
        out = {}
        for policy, counts in self.mass.items():
            total = counts.sum()
            out[policy] = {label: float(c / total) if total > 0 else 0.0 for label, c in zip(BIN_LABELS, counts, strict=True)}
        return out
