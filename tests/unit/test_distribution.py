"""Off-policy CDFs and quantiles (`estimators.grid`, `estimators.distribution`): exact hand-computed values, numpy oracles,
mergeability, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from estimators import EstimatorInputError
from estimators.distribution import PolicyRows, accumulate_cdfs, coarse_index, finalize_cdf, quantile_difference
from estimators.grid import Grid, monotone


def test_grid_spans_the_range_log_spaced_with_a_zero_when_asked() -> None:
    assert Grid.spanning(1.0, 100.0, points=3).thresholds.tolist() == [1.0, 10.0, 100.0]
    assert Grid.spanning(1.0, 100.0, points=4, zero=True).thresholds.tolist() == [0.0, 1.0, 10.0, 100.0]
    assert Grid.spanning(4.0, 4.0, points=3).thresholds.tolist() == pytest.approx([2.0, 4.0, 8.0])
    assert Grid.spanning(39.99999999999999, 40.0, points=3).thresholds.tolist() == pytest.approx([20.0, 40.0, 80.0])  # rounding


def test_below_and_indicators() -> None:
    grid = Grid(np.array([0.0, 1.0, 10.0]))
    assert grid.below(np.array([0.0, 0.5, 1.0, 10.0, 11.0])).tolist() == [0, 1, 1, 2, 3]
    assert grid.indicators(np.array([1.0])).tolist() == [[0.0, 1.0, 1.0]]


def test_quantile_interpolates_in_log_t_and_from_zero_in_t() -> None:
    grid = Grid(np.array([0.0, 1.0, 100.0]))
    cdf = np.array([0.2, 0.4, 1.0])
    assert grid.quantile(cdf, 0.1) == 0.0                       # inside the mass at zero
    assert grid.quantile(cdf, 0.3) == pytest.approx(0.5)        # halfway from 0 to 1, linear in t
    assert grid.quantile(cdf, 0.7) == pytest.approx(10.0)       # halfway from 1 to 100 in log t
    assert np.isnan(grid.quantile(np.array([0.2, 0.4, 0.9]), 0.95))   # beyond the grid
    assert grid.position(np.array([0.5, 10.0, 100.0])).tolist() == pytest.approx([0.5, 1.5, 2.0])


def test_monotone_is_the_isotonic_projection_clipped_to_unit() -> None:
    np.testing.assert_allclose(monotone(np.array([0.2, 0.1, 0.5, 1.2])), [0.15, 0.15, 0.5, 1.0])
    np.testing.assert_allclose(monotone(np.array([[0.1, 0.3], [0.4, 0.2]])), [[0.1, 0.3], [0.3, 0.3]])


@pytest.mark.parametrize(("thresholds", "match"), [
    ([1.0], "at least 2"), ([2.0, 1.0], "strictly increasing"), ([0.0, 0.0, 1.0], "strictly increasing"), ([-1.0, 1.0], ">= 0"),
])
def test_bad_grids_are_refused(thresholds: list[float], match: str) -> None:
    with pytest.raises(EstimatorInputError, match="A grid needs"):
        Grid(np.array(thresholds))


def test_ips_and_snips_cdfs_by_hand() -> None:
    """y = 1, 2, 3 with importance weights 2, 1, 0.5: IPS sums w·1{y ≤ t} / n, SNIPS / Σ w."""
    grid = Grid(np.array([1.0, 2.0, 3.0]))
    sums, _ = accumulate_cdfs(grid, np.array([1.0, 2.0, 3.0]), np.ones(3), {"pi": PolicyRows(np.array([2.0, 1.0, 0.5]))},
                              estimators=("IPS", "SNIPS"))
    ips, snips = (finalize_cdf(sums[("pi", e)], grid, estimator=e) for e in ("IPS", "SNIPS"))
    np.testing.assert_allclose(sums[("pi", "IPS")].num / sums[("pi", "IPS")].den, [2 / 3, 1.0, 3.5 / 3])
    np.testing.assert_allclose(ips.cdf, [2 / 3, 1.0, 1.0])          # 3.5 / 3 projected into [0, 1]
    np.testing.assert_allclose(snips.cdf, [2 / 3.5, 3 / 3.5, 1.0])


def test_on_policy_snips_is_the_empirical_cdf_with_the_binomial_stderr(rng: np.random.Generator) -> None:
    y = rng.lognormal(size=500)
    grid = Grid.spanning(float(y.min()), float(y.max()), points=64)
    sums, _ = accumulate_cdfs(grid, y, np.ones(y.size), {"pi": PolicyRows(np.ones(y.size))}, estimators=("SNIPS",))
    dist = finalize_cdf(sums[("pi", "SNIPS")], grid, estimator="SNIPS")
    ecdf = (y[:, None] <= grid.thresholds[None, :]).mean(axis=0)
    np.testing.assert_allclose(dist.cdf, ecdf)
    np.testing.assert_allclose(dist.stderr, np.sqrt(ecdf * (1 - ecdf) / (y.size - 1)), atol=1e-12)
    assert dist.ci_low[0] < dist.quantiles[0] < dist.ci_high[0]
    assert dist.quantiles[0] == pytest.approx(np.median(y), rel=0.05)


def test_snips_stderr_is_the_delta_method_variance_of_the_ratio(rng: np.random.Generator) -> None:
    """Var of Σ w 1 / Σ w = Σ w² (1 − F)² over rows ≤ t plus Σ w² F² over the others, / (Σ w)², times n / (n − 1)."""
    y, w = rng.lognormal(size=300), rng.exponential(size=300)
    grid = Grid(np.array([0.5, 1.0, 2.0, float(y.max())]))
    sums, _ = accumulate_cdfs(grid, y, np.ones(y.size), {"pi": PolicyRows(w)}, estimators=("SNIPS",))
    dist = finalize_cdf(sums[("pi", "SNIPS")], grid, estimator="SNIPS")
    ind = y[:, None] <= grid.thresholds[None, :]
    f = (w @ ind) / w.sum()
    oracle = np.sqrt(((w[:, None] * (ind - f)) ** 2).sum(axis=0) / w.sum() ** 2 * 300 / 299)
    np.testing.assert_allclose(dist.stderr, oracle, atol=1e-12)


def test_dr_without_a_model_is_ips_and_without_weights_is_the_model() -> None:
    y, s = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 1.0, 1.0])
    grid = Grid(np.arange(1.0, 9.0))
    c = coarse_index(grid.size).size
    w = np.array([0.5, 2.0, 1.0, 0.0])
    zero = np.zeros((4, c))
    sums, _ = accumulate_cdfs(grid, y, s, {"pi": PolicyRows(w, zero, zero)}, estimators=("IPS", "DR"))
    np.testing.assert_allclose(sums[("pi", "DR")].num, sums[("pi", "IPS")].num)
    model = np.full((4, c), 0.25)
    sums, _ = accumulate_cdfs(grid, y, s, {"pi": PolicyRows(np.zeros(4), model, model)}, estimators=("DR",))
    np.testing.assert_allclose(sums[("pi", "DR")].num / sums[("pi", "DR")].den, np.full(grid.size, 0.25))


def test_sums_of_two_halves_equal_the_whole(rng: np.random.Generator) -> None:
    y, s, w, w0 = rng.lognormal(size=200), rng.uniform(1, 3, 200), rng.exponential(size=200), rng.exponential(size=200)
    grid = Grid.spanning(0.1, float(y.max()), points=16)
    c = coarse_index(grid.size).size
    dm, lg = rng.uniform(size=(200, c)), rng.uniform(size=(200, c))

    def run(sl: slice) -> tuple[dict, dict]:
        rows = {"pi": PolicyRows(w[sl], dm[sl], lg[sl]), "base": PolicyRows(w0[sl], dm[sl] / 2, lg[sl])}
        return accumulate_cdfs(grid, y[sl], s[sl], rows, baseline="base")

    whole, halves = run(slice(None)), (run(slice(0, 77)), run(slice(77, None)))
    for part in (0, 1):
        for key, value in whole[part].items():
            merged = halves[0][part][key] + halves[1][part][key]
            for name in ("num", "aa", "ac") if part == 0 else ("aa", "ac", "ca"):
                np.testing.assert_allclose(getattr(merged, name), getattr(value, name), rtol=1e-12)


def test_a_policy_against_itself_differs_by_exactly_zero(rng: np.random.Generator) -> None:
    y, w = rng.lognormal(size=400), rng.exponential(size=400)
    grid = Grid.spanning(float(y.min()), float(y.max()), points=32)
    for est in ("IPS", "SNIPS"):
        sums, cross = accumulate_cdfs(grid, y, np.ones(400), {"pi": PolicyRows(w), "base": PolicyRows(w)}, estimators=(est,),
                                      baseline="base")
        a, b = (finalize_cdf(sums[(k, est)], grid, estimator=est) for k in ("pi", "base"))
        value, low, high = quantile_difference(a, b, cross[("pi", est)])
        defined = np.isfinite(a.quantile_se)   # IPS's CDF may end below p + z·se (an open interval: no finite difference)
        assert defined[0] and not np.isfinite(high[~defined]).any()
        np.testing.assert_allclose(value[defined], 0.0)
        np.testing.assert_allclose(low[defined], 0.0, atol=1e-6 * float(np.nanmax(np.abs(a.quantiles))))
        np.testing.assert_allclose(high[defined], 0.0, atol=1e-6 * float(np.nanmax(np.abs(a.quantiles))))


def test_finalize_refuses_sums_without_weight() -> None:
    grid = Grid(np.array([1.0, 2.0]))
    sums, _ = accumulate_cdfs(grid, np.array([1.0, 2.0]), np.ones(2), {"pi": PolicyRows(np.zeros(2))}, estimators=("SNIPS",))
    with pytest.raises(EstimatorInputError, match="SNIPS: the CDF's normaliser is 0.0"):
        finalize_cdf(sums[("pi", "SNIPS")], grid, estimator="SNIPS")
