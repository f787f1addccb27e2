"""Statistics of the A/B report, from per-user sums (the user is the unit of randomization).

For one arm with n users, user u having I_u impressions and D_u downloads, the store gives
S_I = sum I_u, S_D = sum D_u, S_II = sum I_u^2, S_DD = sum D_u^2, S_ID = sum I_u D_u. Then

* CVR (downloads per user) is the mean of D_u: Var = s_D^2 / n with the sample variance s_D^2.
* CTR = S_D / S_I is a ratio of two means (mean D / mean I) over the same users. By the delta method
  Var(CTR) ~ (s_D^2 - 2 R s_ID + R^2 s_I^2) / (n mean_I^2), with R = CTR and the sample (co)variances
  of the per-user counts. This is the variance of the per-user residual D_u - R I_u, scaled; it is wider
  than the per-impression binomial variance whenever users differ, which they do.
* The relative lift of arm t over control c is L = t / c - 1, with the delta-method standard error of
  a ratio of independent estimates: Var(t / c) ~ Var(t) / c^2 + t^2 Var(c) / c^4. Its two-sided
  p-value comes from the z-test of t - c = 0 with Var(t) + Var(c).
* Sample-ratio mismatch: Pearson's chi-square of users per arm against the configured weights, with
  k - 1 degrees of freedom, its tail in closed form (integer degrees of freedom), no scipy needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

Z_95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


@dataclass(frozen=True, slots=True)
class UserSums:
    """Per-user sums of one arm (see the module docstring)."""

    n: int
    s_i: float
    s_d: float
    s_ii: float
    s_dd: float
    s_id: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its standard error (None where undefined: no data, or one user)."""

    value: float | None
    se: float | None

    def interval(self, z: float = Z_95) -> tuple[float | None, float | None]:
        """The normal confidence interval value +- z se."""
        if self.value is None or self.se is None:
            return None, None
        return self.value - z * self.se, self.value + z * self.se


@dataclass(frozen=True, slots=True)
class LiftEstimate:
    """Relative lift of an arm over the control: value, standard error and two-sided p-value."""

    lift: float | None
    se: float | None
    p_value: float | None

    def interval(self, z: float = Z_95) -> tuple[float | None, float | None]:
        if self.lift is None or self.se is None:
            return None, None
        return self.lift - z * self.se, self.lift + z * self.se


def _variances(s: UserSums) -> tuple[float, float, float]:
    """Sample variance of I, of D, and their sample covariance (n - 1 in the denominator)."""
    n = s.n
    mean_i, mean_d = s.s_i / n, s.s_d / n
    var_i = max((s.s_ii - n * mean_i * mean_i) / (n - 1), 0.0)
    var_d = max((s.s_dd - n * mean_d * mean_d) / (n - 1), 0.0)
    cov = (s.s_id - n * mean_i * mean_d) / (n - 1)
    return var_i, var_d, cov


def ratio_estimate(s: UserSums) -> Estimate:
    """CTR = S_D / S_I with its delta-method standard error over users."""
    if s.n == 0 or s.s_i <= 0:
        return Estimate(None, None)
    ratio = s.s_d / s.s_i
    if s.n < 2:
        return Estimate(ratio, None)
    var_i, var_d, cov = _variances(s)
    mean_i = s.s_i / s.n
    variance = (var_d - 2.0 * ratio * cov + ratio * ratio * var_i) / (s.n * mean_i * mean_i)
    return Estimate(ratio, math.sqrt(max(variance, 0.0)))


def mean_estimate(s: UserSums) -> Estimate:
    """CVR = S_D / n (downloads per user) with its standard error s_D / sqrt(n)."""
    if s.n == 0:
        return Estimate(None, None)
    mean = s.s_d / s.n
    if s.n < 2:
        return Estimate(mean, None)
    _, var_d, _ = _variances(s)
    return Estimate(mean, math.sqrt(var_d / s.n))


def relative_lift(
    treatment: Estimate,
    control: Estimate,
    raw_treatment: float | None = None,
    raw_control: float | None = None,
) -> LiftEstimate:
    """(t - c) / c with its delta-method standard error, and the p-value of t = c.

    ``raw_treatment`` and ``raw_control`` are the unadjusted values when ``treatment`` and ``control``
    are CUPED-adjusted: the lift is then relative to the unadjusted control, and its variance uses the
    unadjusted values where the delta method has the means (as gbstats does). Without them this is
    t / c - 1.
    """
    t, c = treatment.value, control.value
    t_raw = t if raw_treatment is None else raw_treatment
    c_raw = c if raw_control is None else raw_control
    if t is None or c is None or t_raw is None or not c_raw:
        return LiftEstimate(None, None, None)
    lift = (t - c) / c_raw
    if treatment.se is None or control.se is None:
        return LiftEstimate(lift, None, None)
    var_t, var_c = treatment.se**2, control.se**2
    se = math.sqrt(var_t / c_raw**2 + t_raw * t_raw * var_c / c_raw**4)
    diff_se = math.sqrt(var_t + var_c)
    if diff_se == 0:
        p_value = 1.0 if t == c else 0.0
    else:
        p_value = normal_two_sided_p((t - c) / diff_se)
    return LiftEstimate(lift, se, p_value)


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with integer ``df`` >= 1 degrees of freedom (closed form).

    Even df = 2m: exp(-x/2) sum_{j<m} (x/2)^j / j!. Odd df = 2m+1: the df = 1 tail erfc(sqrt(x/2))
    plus sqrt(2x/pi) exp(-x/2) sum_{j=1..m} x^(j-1) / (1 * 3 * ... * (2j-1)).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    half = x / 2.0
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= half / j
            total += term
        return min(1.0, math.exp(-half) * total)
    tail = math.erfc(math.sqrt(half))
    term, total = 1.0, 0.0
    for j in range(1, (df - 1) // 2 + 1):
        term = 1.0 if j == 1 else term * x / (2 * j - 1)
        total += term
    return min(1.0, tail + math.sqrt(2.0 * x / math.pi) * math.exp(-half) * total)


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Pearson's chi-square of observed users per arm against the expected split."""

    chi2: float
    df: int
    p_value: float
    expected: dict[str, float]


def srm_test(observed: Mapping[str, int], weights: Mapping[str, float]) -> SrmResult | None:
    """Chi-square test of users per arm against weights (arms of positive weight); None if < 2 arms."""
    arms = [arm for arm, weight in weights.items() if weight > 0]
    total_weight = sum(weights[arm] for arm in arms)
    total_users = sum(observed.get(arm, 0) for arm in arms)
    if len(arms) < 2 or total_users == 0:
        return None
    expected = {arm: total_users * weights[arm] / total_weight for arm in arms}
    chi2 = sum((observed.get(arm, 0) - expected[arm]) ** 2 / expected[arm] for arm in arms)
    return SrmResult(chi2=chi2, df=len(arms) - 1, p_value=chi2_sf(chi2, len(arms) - 1), expected=expected)
