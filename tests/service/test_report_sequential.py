"""Always-valid intervals, CUPED and Holm against GrowthBook's gbstats and numpy / scipy on the same sums."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest
from gbstats.models.statistics import RatioStatistic, RegressionAdjustedStatistic, SampleMeanStatistic
from scipy import optimize, stats

from service.report.compare import compare_arms, thetas
from service.report.models import Lift
from service.report.multiple import holm
from service.report.sequential import SequentialDesign
from service.report.stats import Estimate
from service.report.sums import Moments
from tests.service.report_users import ArmUsers, arm_users

DESIGN = SequentialDesign()


def report_lifts(control: ArmUsers, treated: ArmUsers, cuped: bool = True) -> dict[str, Lift]:
    moments = {"control": control.moments(), "treatment": treated.moments()}
    lifts = compare_arms(moments, ["control", "treatment"], "control", DESIGN, thetas(moments, cuped))
    return {lift.metric: lift for lift in lifts}


def mean_stat(values: np.ndarray) -> SampleMeanStatistic:
    return SampleMeanStatistic(n=len(values), sum=float(values.sum()), sum_squares=float((values**2).sum()))


def ratio_stat(users: ArmUsers) -> RatioStatistic:
    return RatioStatistic(
        n=len(users.d),
        m_statistic=mean_stat(users.d),
        d_statistic=mean_stat(users.i),
        m_d_sum_of_products=float((users.d * users.i).sum()),
    )


def cuped_stat(users: ArmUsers) -> RegressionAdjustedStatistic:
    return RegressionAdjustedStatistic(
        n=len(users.d),
        post_statistic=mean_stat(users.d),
        pre_statistic=mean_stat(users.dp),
        post_pre_sum_of_products=float((users.d * users.dp).sum()),
        theta=0.0,
    )


def assert_same_fixed_interval(low: float | None, high: float | None, welch: list[float]) -> None:
    """gbstats' fixed interval uses Welch's t quantile, ours the normal one: same centre, widths to 0.1 %."""
    assert low is not None and high is not None
    assert (low + high) / 2 == pytest.approx((welch[0] + welch[1]) / 2, rel=1e-9)
    assert high - low == pytest.approx(welch[1] - welch[0], rel=1e-3)


@pytest.fixture(scope="module")
def arms() -> tuple[ArmUsers, ArmUsers]:
    return arm_users(3000, seed=1), arm_users(3200, seed=2, lift=0.05)


def test_ctr_and_cvr_match_gbstats_sequential_and_fixed(arms: tuple[ArmUsers, ArmUsers]) -> None:
    control, treated = arms
    lifts = report_lifts(control, treated, cuped=False)
    config = SequentialConfig(sequential_tuning_parameter=5000)
    for metric, (a, b) in {
        "ctr": (ratio_stat(control), ratio_stat(treated)),
        "cvr": (mean_stat(control.d), mean_stat(treated.d)),
    }.items():
        ours = lifts[metric]
        sequential = SequentialTwoSidedTTest(a, b, config).compute_result()
        assert ours.lift == pytest.approx(sequential.expected, rel=1e-9)
        assert ours.se == pytest.approx(sequential.uplift.stddev, rel=1e-9)
        assert (ours.sequential_ci.low, ours.sequential_ci.high) == pytest.approx(sequential.ci, rel=1e-9)
        assert ours.sequential_p_value == pytest.approx(sequential.p_value, rel=1e-9)
        assert_same_fixed_interval(ours.ci.low, ours.ci.high, TwoSidedTTest(a, b).compute_result().ci)
        assert ours.cuped is None


def test_cuped_cvr_matches_gbstats_regression_adjustment(arms: tuple[ArmUsers, ArmUsers]) -> None:
    control, treated = arms
    cuped = report_lifts(control, treated)["cvr"].cuped
    assert cuped is not None
    a, b = cuped_stat(control), cuped_stat(treated)
    config = SequentialConfig(sequential_tuning_parameter=5000)
    sequential = SequentialTwoSidedTTest(a, b, config).compute_result()
    assert cuped.lift == pytest.approx(sequential.expected, rel=1e-9)
    assert cuped.se == pytest.approx(sequential.uplift.stddev, rel=1e-9)
    assert (cuped.sequential_ci.low, cuped.sequential_ci.high) == pytest.approx(sequential.ci, rel=1e-9)
    assert cuped.sequential_p_value == pytest.approx(sequential.p_value, rel=1e-9)
    fixed = TwoSidedTTest(cuped_stat(control), cuped_stat(treated)).compute_result()
    assert_same_fixed_interval(cuped.ci.low, cuped.ci.high, fixed.ci)
    assert cuped.variance_reduction is not None and cuped.variance_reduction > 0.1


def test_ctr_cuped_theta_is_the_pooled_regression_slope(arms: tuple[ArmUsers, ArmUsers]) -> None:
    """Theta of CTR: the OLS slope of the linearized CTR on the linearized pre-period CTR, all users."""
    control, treated = arms
    pooled = np.vstack([control.stacked(), treated.stacked()])
    d, i, dp, ip = pooled.T
    ctr, ctr_pre = d.sum() / i.sum(), dp.sum() / ip.sum()
    post, pre = (d - ctr * i) / i.mean(), (dp - ctr_pre * ip) / ip.mean()
    slope = np.polyfit(pre, post, 1)[0]
    moments = {"control": control.moments(), "treatment": treated.moments()}
    pooled_theta = thetas(moments, True)["ctr"]
    assert pooled_theta.theta == pytest.approx(slope, rel=1e-9)
    assert pooled_theta.variance_reduction == pytest.approx(stats.pearsonr(pre, post)[0] ** 2, rel=1e-9)


def adjusted_ctr_lift(control: ArmUsers, treated: ArmUsers) -> float:
    """The CUPED CTR lift written out on per-user arrays: theta pooled, then each arm adjusted."""
    pooled = np.vstack([control.stacked(), treated.stacked()])
    d, i, dp, ip = pooled.T
    ctr, ctr_pre = d.sum() / i.sum(), dp.sum() / ip.sum()
    theta = np.polyfit((dp - ctr_pre * ip) / ip.mean(), (d - ctr * i) / i.mean(), 1)[0]
    raw = [users.d.sum() / users.i.sum() for users in (control, treated)]
    adjusted = [
        value - theta * (users.dp.sum() / users.ip.sum() - ctr_pre)
        for value, users in zip(raw, (control, treated), strict=True)
    ]
    return float((adjusted[1] - adjusted[0]) / raw[0])


def test_ctr_cuped_lift_and_error_agree_with_a_bootstrap(arms: tuple[ArmUsers, ArmUsers]) -> None:
    control, treated = arms
    cuped = report_lifts(control, treated)["ctr"].cuped
    assert cuped is not None and cuped.lift is not None and cuped.se is not None
    assert cuped.lift == pytest.approx(adjusted_ctr_lift(control, treated), rel=1e-9)
    rng = np.random.default_rng(3)
    boot = [
        adjusted_ctr_lift(
            control.take(rng.integers(0, len(control.d), len(control.d))),
            treated.take(rng.integers(0, len(treated.d), len(treated.d))),
        )
        for _ in range(300)
    ]
    assert cuped.se == pytest.approx(np.std(boot, ddof=1), rel=0.12)
    plain = report_lifts(control, treated)["ctr"]
    assert plain.se is not None and cuped.se < plain.se


def test_confidence_sequence_is_the_papers_formula_and_tightest_at_the_tuning() -> None:
    """Eq. 9 of Waudby-Smith et al. written out; its rho (eq. 161) nearly minimizes the width at N*."""
    alpha, n_star = 0.05, 5000.0
    design = SequentialDesign(alpha, n_star)
    estimate, n = Estimate(0.07, 0.002), 4000
    sigma2 = 0.002**2 * n

    def width(rho: float, users: int) -> float:
        return math.sqrt(
            sigma2
            * 2
            * (users * rho**2 + 1)
            / (users * rho) ** 2
            * math.log(math.sqrt(users * rho**2 + 1) / alpha)
        )

    low, high = design.interval(estimate, n)
    assert (low, high) == pytest.approx((0.07 - width(design.rho, n), 0.07 + width(design.rho, n)), rel=1e-12)
    best = optimize.minimize_scalar(lambda r: width(r, int(n_star)), bounds=(1e-5, 1.0), method="bounded")
    assert design.rho == pytest.approx(best.x, rel=0.05)
    fixed = stats.norm.ppf(0.975) * 0.002
    assert width(design.rho, n) > fixed  # always-valid costs width


def test_sequential_p_value_is_below_alpha_exactly_when_the_interval_excludes_zero() -> None:
    design = SequentialDesign()
    for value in np.linspace(0.0, 0.03, 61):
        low, high = design.interval(Estimate(float(value), 0.005), 6000)
        p = design.p_value(float(value), 0.005, 6000)
        assert low is not None and high is not None
        excludes = low > 0 or high < 0
        assert excludes == (p < design.alpha), (value, p, low)


def closed_bonferroni(p_values: list[float]) -> list[float]:
    """Holm as closed testing: the largest Bonferroni p of every intersection containing the hypothesis."""
    m = len(p_values)
    adjusted = []
    for k in range(m):
        worst = 0.0
        for size in range(1, m + 1):
            for subset in itertools.combinations(range(m), size):
                if k in subset:
                    worst = max(worst, min(1.0, size * min(p_values[j] for j in subset)))
        adjusted.append(worst)
    return adjusted


def test_holm_is_closed_bonferroni() -> None:
    rng = np.random.default_rng(4)
    for _ in range(30):
        p_values = list(rng.uniform(0, 0.2, int(rng.integers(1, 7))))
        assert holm(p_values) == pytest.approx(closed_bonferroni(p_values), rel=1e-12)
    assert holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04])


def test_many_arms_are_each_compared_with_the_control_and_corrected_together() -> None:
    users = {name: arm_users(2000, seed=k, lift=lift) for k, (name, lift) in enumerate(
        [("control", 0.0), ("a", 0.0), ("b", 0.25), ("c", 0.02)]
    )}  # fmt: skip
    moments = {name: arm.moments() for name, arm in users.items()}
    lifts = compare_arms(moments, list(users), "control", DESIGN, thetas(moments, True))
    assert [(lift.arm, lift.metric) for lift in lifts] == [
        (arm, metric) for arm in ("a", "b", "c") for metric in ("ctr", "cvr")
    ]
    decisive = [lift.cuped.sequential_p_value if lift.cuped else lift.sequential_p_value for lift in lifts]
    assert [lift.decision_p_value for lift in lifts] == pytest.approx(holm(decisive))
    assert {lift.arm for lift in lifts if lift.conclusive} == {"b"}
    control_values = {lift.metric: lift.control_value for lift in lifts}
    assert all(lift.control_value == control_values[lift.metric] for lift in lifts)


def test_peeking_every_day_stays_under_alpha_with_the_confidence_sequence() -> None:
    """A/A tests looked at daily: the always-valid decision rarely fires; the fixed-horizon one more often."""
    rng = np.random.default_rng(5)
    ever_sequential = ever_fixed = 0
    trials, looks, per_day = 300, 10, 150
    for _ in range(trials):
        arms = [arm_users(per_day * looks, seed=int(rng.integers(1 << 31)), new_share=1.0) for _ in range(2)]
        fired_sequential = fired_fixed = False
        for look in range(1, looks + 1):
            moments = {
                name: arm.take(np.arange(per_day * look)).moments()
                for name, arm in zip(("c", "t"), arms, strict=True)
            }
            lifts = compare_arms(moments, ["c", "t"], "c", DESIGN, thetas(moments, False))
            fired_sequential |= any(lift.conclusive for lift in lifts)
            fired_fixed |= any(lift.significant for lift in lifts)
        ever_sequential += fired_sequential
        ever_fixed += fired_fixed
    assert ever_sequential / trials <= 0.05
    assert ever_fixed > 2 * max(ever_sequential, 1)


def test_moments_are_the_sums_of_the_users(arms: tuple[ArmUsers, ArmUsers]) -> None:
    control, _ = arms
    moments = control.moments()
    joint = moments + Moments.zero()
    assert joint.n == len(control.d)
    assert joint.covariance() == pytest.approx(np.cov(control.stacked(), rowvar=False), rel=1e-9)
