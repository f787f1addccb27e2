"""The report's statistics against independent numpy / scipy computations on user-level data."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from service.report.build import srm_check
from service.report.stats import (
    Z_95,
    Estimate,
    UserSums,
    chi2_sf,
    mean_estimate,
    ratio_estimate,
    relative_lift,
    srm_test,
)

IntArray = npt.NDArray[np.int64]


def users(n: int, ctr: float, seed: int) -> tuple[IntArray, IntArray]:
    """Heterogeneous users: impressions ~ 1 + Poisson(Gamma), downloads ~ Binomial(I, Beta around ctr)."""
    rng = np.random.default_rng(seed)
    impressions = 1 + rng.poisson(rng.gamma(2.0, 4.0, n))
    p = rng.beta(0.5, 0.5 * (1 - ctr) / ctr, n)
    return impressions, rng.binomial(impressions, p)


def sums(impressions: IntArray, downloads: IntArray) -> UserSums:
    i, d = impressions.astype(float), downloads.astype(float)
    return UserSums(len(i), i.sum(), d.sum(), (i * i).sum(), (d * d).sum(), (i * d).sum())


def test_ctr_interval_is_the_delta_method_over_users() -> None:
    impressions, downloads = users(3000, 0.05, seed=1)
    estimate = ratio_estimate(sums(impressions, downloads))
    ctr = downloads.sum() / impressions.sum()
    # independent form: the standard error of the per-user residual D - R I, divided by mean I
    residual = downloads - ctr * impressions
    se = stats.sem(residual) / impressions.mean()
    assert estimate.value == pytest.approx(ctr, rel=1e-12)
    assert estimate.se == pytest.approx(se, rel=1e-9)
    low, high = estimate.interval()
    z = stats.norm.ppf(0.975)
    assert (low, high) == pytest.approx((ctr - z * se, ctr + z * se), rel=1e-9)
    # users differ, so the per-impression binomial error is too small
    binomial_se = math.sqrt(ctr * (1 - ctr) / impressions.sum())
    assert se > 1.3 * binomial_se


def test_ctr_standard_error_agrees_with_a_bootstrap_over_users() -> None:
    impressions, downloads = users(2000, 0.08, seed=2)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 2000, (400, 2000))
    boot = downloads[draws].sum(axis=1) / impressions[draws].sum(axis=1)
    estimate = ratio_estimate(sums(impressions, downloads))
    assert estimate.se == pytest.approx(np.std(boot, ddof=1), rel=0.12)


def test_cvr_interval_is_that_of_a_per_user_mean() -> None:
    impressions, downloads = users(1500, 0.05, seed=4)
    estimate = mean_estimate(sums(impressions, downloads))
    assert estimate.value == pytest.approx(downloads.mean(), rel=1e-12)
    assert estimate.se == pytest.approx(stats.sem(downloads), rel=1e-9)


def test_lift_p_value_and_interval() -> None:
    control = ratio_estimate(sums(*users(2500, 0.05, seed=5)))
    treated = ratio_estimate(sums(*users(2500, 0.06, seed=6)))
    assert control.value and control.se and treated.value and treated.se
    lift = relative_lift(treated, control)
    z = (treated.value - control.value) / math.hypot(treated.se, control.se)
    assert lift.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert lift.lift == pytest.approx(treated.value / control.value - 1, rel=1e-12)
    # delta method for t / c with independent arms: relative variances add
    ratio = treated.value / control.value
    se = ratio * math.sqrt((treated.se / treated.value) ** 2 + (control.se / control.value) ** 2)
    assert lift.se == pytest.approx(se, rel=1e-9)
    assert lift.lift is not None
    assert lift.interval() == pytest.approx((lift.lift - Z_95 * se, lift.lift + Z_95 * se), rel=1e-9)


def test_undefined_estimates_are_none() -> None:
    assert ratio_estimate(UserSums(0, 0, 0, 0, 0, 0)) == Estimate(None, None)
    assert ratio_estimate(UserSums(1, 4, 1, 16, 1, 4)) == Estimate(0.25, None)
    assert mean_estimate(UserSums(1, 4, 1, 16, 1, 4)) == Estimate(1.0, None)
    assert relative_lift(Estimate(0.1, 0.01), Estimate(0.0, 0.01)).lift is None
    assert relative_lift(Estimate(0.1, 0.0), Estimate(0.1, 0.0)).p_value == 1.0


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 8, 11])
def test_chi_square_tail_matches_scipy(df: int) -> None:
    for x in (0.0, 0.01, 0.5, 1.0, 3.84, 10.0, 25.0, 60.0, 150.0):
        assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi2_sf(1.0, 0)


def test_srm_statistic_matches_scipy_chisquare() -> None:
    observed = {"control": 5120, "a": 2400, "b": 2480}
    weights = {"control": 50.0, "a": 25.0, "b": 25.0}
    result = srm_test(observed, weights)
    assert result is not None
    expected = [10_000 * 0.5, 10_000 * 0.25, 10_000 * 0.25]
    reference = stats.chisquare([5120, 2400, 2480], expected)
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.df == 2


def test_srm_flags_a_skewed_split_and_not_a_fair_one() -> None:
    weights = {"control": 50.0, "treatment": 50.0}
    skewed = srm_check({"control": 5200, "treatment": 4800}, weights)
    assert skewed.flagged and skewed.p_value is not None and skewed.p_value < 0.001
    rng = np.random.default_rng(8)
    fair_draws = rng.binomial(10_000, 0.5, 20)
    flags = [
        srm_check({"control": int(n), "treatment": 10_000 - int(n)}, weights).flagged for n in fair_draws
    ]
    assert not any(flags)
    ramped = srm_check({"control": 9000, "treatment": 1000}, {"control": 90.0, "treatment": 10.0})
    assert not ramped.flagged and ramped.p_value == pytest.approx(1.0)


def test_srm_flags_users_in_arms_that_should_get_none() -> None:
    check = srm_check(
        {"control": 500, "treatment": 500, "ghost": 3}, {"control": 50.0, "treatment": 50.0, "off": 0.0}
    )
    assert check.flagged and check.note is not None and "ghost" in check.note
    assert check.p_value == pytest.approx(1.0)  # the split of the real arms is fine
    empty = srm_check({}, {"control": 50.0, "treatment": 50.0})
    assert not empty.flagged and empty.p_value is None and empty.note is not None


def test_ctr_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    """A/A simulation with heterogeneous users: user-level intervals keep their nominal coverage."""
    rng = np.random.default_rng(9)
    n, trials, covered = 800, 300, 0
    truth_p = 0.05  # E[D] / E[I] = E[p] = 1 / 20, p being independent of I
    for _ in range(trials):
        impressions = 1 + rng.poisson(rng.gamma(2.0, 4.0, n))
        downloads = rng.binomial(impressions, rng.beta(1.0, 19.0, n))
        low, high = ratio_estimate(sums(impressions, downloads)).interval()
        assert low is not None and high is not None
        covered += low <= truth_p <= high
    assert 0.92 <= covered / trials <= 0.98
