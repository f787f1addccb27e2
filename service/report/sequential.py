"""Always-valid inference: the asymptotic confidence sequence with a normal-mixture boundary.

For an estimate whose variance is sigma^2 / N after N users, Waudby-Smith et al. (2023, "Time-uniform
central limit theory and asymptotic confidence sequences", eq. 9) give the interval

    estimate +- sigma * sqrt(2 (N rho^2 + 1) / (N^2 rho^2) * log(sqrt(N rho^2 + 1) / alpha))

which covers the truth at every N at once with probability about 1 - alpha, so it can be looked at
every day and stopped on. ``rho`` sets where the boundary is tightest; it is chosen (their eq. 161)
so that the boundary is tightest at ``tuning_users`` users. The always-valid p-value is the smallest
alpha whose interval excludes zero: 1 / the mixture e-value (their eq. 155). GrowthBook's gbstats and
Eppo use this boundary; ``tuning_users`` defaults to GrowthBook's 5,000. For a lift, N is the number
of users of both arms and sigma^2 = N Var(lift), as in gbstats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.report.stats import Estimate

DEFAULT_TUNING_USERS = 5000.0


@dataclass(frozen=True, slots=True)
class SequentialDesign:
    """The confidence sequence's level and tuning (the sample size where it is tightest)."""

    alpha: float = 0.05
    tuning_users: float = DEFAULT_TUNING_USERS

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not self.tuning_users > 0:
            raise ValueError(f"tuning_users must be positive, got {self.tuning_users}")

    @property
    def rho(self) -> float:
        """The mixture's spread, tightest at ``tuning_users``."""
        log_alpha = math.log(self.alpha)
        return math.sqrt((-2.0 * log_alpha + math.log(-2.0 * log_alpha + 1.0)) / self.tuning_users)

    def half_width(self, se: float, n: int) -> float:
        """Half the width of the interval of an estimate with standard error ``se`` after ``n`` users."""
        rho2 = self.rho**2
        spread = n * rho2 + 1.0
        sigma = se * math.sqrt(n)
        return sigma * math.sqrt(2.0 * spread / (n * n * rho2) * math.log(math.sqrt(spread) / self.alpha))

    def p_value(self, estimate: float, se: float, n: int) -> float:
        """The always-valid p-value of ``estimate`` = 0 (1 over the mixture e-value, at most 1)."""
        if se == 0:
            return 1.0 if estimate == 0 else 0.0
        rho2 = self.rho**2
        spread = n * rho2 + 1.0
        z2 = (estimate / se) ** 2  # = S^2 / sigma^2 for the running sum S = N * estimate
        log_e_value = rho2 * n * z2 / (2.0 * spread) - 0.5 * math.log(spread)
        return 1.0 if log_e_value <= 0 else math.exp(-log_e_value)

    def interval(self, estimate: Estimate, n: int) -> tuple[float | None, float | None]:
        """The always-valid interval of ``estimate`` after ``n`` users (None where undefined)."""
        if estimate.value is None or estimate.se is None or n < 2:
            return None, None
        width = self.half_width(estimate.se, n)
        return estimate.value - width, estimate.value + width
