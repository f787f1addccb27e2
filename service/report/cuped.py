"""CUPED: each metric adjusted by its own pre-period value, with one theta pooled over all arms.

Every metric of the report is a smooth function of per-user means of (D, I, Dp, Ip) (``sums.VARIABLES``),
so the delta method linearizes it as g . x per user, g being its gradient at the means:

* CVR = mean D: g = e_D; its covariate, the pre-period downloads per user Dp, has h = e_Dp.
* CTR = mean D / mean I: g = (1, -CTR, 0, 0) / mean I; its covariate, the pre-period CTR Dp / Ip, has
  h = (0, 0, 1, -CTR_pre) / mean Ip (CUPED for ratio metrics, Deng et al. 2013, appendix B).

The adjusted per-user variance is (g - theta h)' C (g - theta h) with C the covariance of the four
counts, minimal at theta = g'Ch / h'Ch. Theta is computed once per metric from all arms' users pooled
(their summed moments, linearized at the pooled means), as gbstats does for two arms; the adjustment
is then the same for every arm, so the control's adjusted value is the same in every comparison. The
adjusted value is value - theta (covariate value - pooled covariate value), which leaves the pooled
mean where it was; lifts divide by the unadjusted control value, as gbstats does.

Users without pre-period events have Dp = Ip = 0 (GrowthBook's convention: the covariate of a user
without data is zero, and the user stays in). If no user of some arm has pre-period impressions, the
pre-period CTR of that arm is undefined and CTR is left unadjusted (theta 0), and so is any metric
whose pooled covariate does not vary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from service.report.models import Metric
from service.report.stats import Estimate
from service.report.sums import DL, IMP, PRE_DL, PRE_IMP, FloatArray, Moments


@dataclass(frozen=True, slots=True)
class Linearized:
    """A metric at one set of moments: its value, its covariate's value, and their gradients."""

    value: float
    covariate: float | None
    g: FloatArray
    h: FloatArray | None


def linearize(metric: Metric, moments: Moments) -> Linearized | None:
    """The metric and its covariate at ``moments``' means; None when the metric is undefined."""
    mean = moments.mean()
    if moments.n == 0:
        return None
    if metric == "cvr":
        return Linearized(float(mean[DL]), float(mean[PRE_DL]), _unit(DL), _unit(PRE_DL))
    if mean[IMP] <= 0:
        return None
    ctr = float(mean[DL] / mean[IMP])
    g = np.zeros(4)
    g[DL], g[IMP] = 1.0 / mean[IMP], -ctr / mean[IMP]
    if mean[PRE_IMP] <= 0:
        return Linearized(ctr, None, g, None)
    ctr_pre = float(mean[PRE_DL] / mean[PRE_IMP])
    h = np.zeros(4)
    h[PRE_DL], h[PRE_IMP] = 1.0 / mean[PRE_IMP], -ctr_pre / mean[PRE_IMP]
    return Linearized(ctr, ctr_pre, g, h)


def _unit(index: int) -> FloatArray:
    vector = np.zeros(4)
    vector[index] = 1.0
    return vector


@dataclass(frozen=True, slots=True)
class PooledTheta:
    """Theta of one metric over all arms, the pooled covariate value, and the variance it removes.

    ``variance_reduction`` is 1 - Var(adjusted) / Var(unadjusted) of the pooled per-user metric
    (the squared correlation of metric and covariate); 0 where CUPED does not apply.
    """

    theta: float
    covariate: float | None
    variance_reduction: float

    @property
    def applied(self) -> bool:
        return self.theta != 0.0


NO_ADJUSTMENT = PooledTheta(0.0, None, 0.0)


def pooled_theta(metric: Metric, arms: Iterable[Moments]) -> PooledTheta:
    """The variance-minimizing theta of ``metric`` over the users of every arm together."""
    arms = [moments for moments in arms if moments.n > 0]
    if not arms or not all(_has_covariate(metric, moments) for moments in arms):
        return NO_ADJUSTMENT
    joint = sum(arms, Moments.zero())
    point = linearize(metric, joint)
    if point is None or point.h is None or point.covariate is None:
        return NO_ADJUSTMENT
    covariance = joint.covariance()
    var_h = float(point.h @ covariance @ point.h)
    var_g = float(point.g @ covariance @ point.g)
    if var_h <= 0 or var_g <= 0:
        return NO_ADJUSTMENT
    cov_gh = float(point.g @ covariance @ point.h)
    theta = cov_gh / var_h
    return PooledTheta(theta, point.covariate, cov_gh * cov_gh / (var_g * var_h))


def _has_covariate(metric: Metric, moments: Moments) -> bool:
    point = linearize(metric, moments)
    return point is not None and point.h is not None


def adjusted_estimate(metric: Metric, moments: Moments, pooled: PooledTheta) -> Estimate:
    """The arm's metric adjusted by ``pooled`` (the plain estimate when theta is 0), with its error."""
    point = linearize(metric, moments)
    if point is None:
        return Estimate(None, None)
    gradient, value = point.g, point.value
    if (
        pooled.applied
        and point.h is not None
        and point.covariate is not None
        and pooled.covariate is not None
    ):
        gradient = point.g - pooled.theta * point.h
        value = point.value - pooled.theta * (point.covariate - pooled.covariate)
    if moments.n < 2:
        return Estimate(value, None)
    variance = float(gradient @ moments.covariance() @ gradient) / moments.n
    return Estimate(value, float(np.sqrt(max(variance, 0.0))))
