"""Simulated users of one arm with a pre-period, and their moments (shared by the report tests).

A user has an activity level and a download propensity that last: impressions before and during the
experiment are Poisson around the activity, downloads binomial at the propensity (times ``lift``
during the experiment). ``new_share`` of the users have no pre-period at all (new users).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.report.sums import Moments

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ArmUsers:
    """Per-user counts of one arm: downloads and impressions, in the experiment and before it."""

    d: FloatArray
    i: FloatArray
    dp: FloatArray
    ip: FloatArray

    def stacked(self) -> FloatArray:
        """Users x (D, I, Dp, Ip), the order of ``service.report.sums.VARIABLES``."""
        return np.column_stack([self.d, self.i, self.dp, self.ip])

    def moments(self) -> Moments:
        x = self.stacked()
        return Moments(len(x), int((self.ip + self.dp > 0).sum()), x.sum(axis=0), x.T @ x)

    def take(self, rows: npt.NDArray[np.int64]) -> ArmUsers:
        return ArmUsers(self.d[rows], self.i[rows], self.dp[rows], self.ip[rows])


def arm_users(
    n: int, seed: int, ctr: float = 0.06, lift: float = 0.0, new_share: float = 0.2, days: float = 7.0
) -> ArmUsers:
    """``n`` heterogeneous users (see the module docstring)."""
    rng = np.random.default_rng(seed)
    activity = rng.gamma(1.5, 1.0, n)
    propensity = rng.beta(1.0, (1.0 - ctr) / ctr, n)
    ip = rng.poisson(activity * days * 3.0).astype(float)
    ip[rng.random(n) < new_share] = 0.0
    i = 1.0 + rng.poisson(activity * days * 3.0).astype(float)
    dp = rng.binomial(ip.astype(np.int64), propensity).astype(float)
    d = rng.binomial(i.astype(np.int64), np.minimum(propensity * (1.0 + lift), 1.0)).astype(float)
    return ArmUsers(d, i, dp, ip)
