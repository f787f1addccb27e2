"""Event rows of a simulated experiment with history before it (the report and console tests' data).

Users join the experiment on some day of it, with activity in another experiment ("older") before and
after they join; ``Logged`` keeps the truth per user to check the report's sums against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.report.sums import Moments

DAY = 86400
FIRST = 20_000  # the experiment's first day (days since 1970)
LOOKBACK = 14


@dataclass
class Logged:
    """Every event row written, and the per-user truth: (arm, user) -> day -> [I, D], user -> [Ip, Dp]."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    post: dict[tuple[str, str], dict[int, list[int]]] = field(default_factory=dict)
    pre: dict[str, list[int]] = field(default_factory=dict)

    def add(self, experiment: str, arm: str, user: str, day: int, impressions: int, downloads: int) -> None:
        for k in range(impressions):
            request, ts = f"{experiment}-{user}-{day}-{k}", day * DAY + 60.0 * k
            common = (request, "a", user, ts, day, ts, experiment, arm)
            self.rows.append((f"i{len(self.rows)}", "impression", *common))
            if k < downloads:
                self.rows.append((f"d{len(self.rows)}", "download", *common))

    def moments(self, arm: str, last_day: int) -> Moments:
        """The moments of ``arm``'s users as of ``last_day``, counted directly."""
        rows = []
        for (a, user), days in self.post.items():
            counts = [c for d, c in days.items() if d <= last_day]
            if a == arm and counts:
                i, d = (sum(c[0] for c in counts), sum(c[1] for c in counts))
                ip, dp = self.pre.get(user, [0, 0])
                rows.append((d, i, dp, ip, user in self.pre))
        x = np.array([r[:4] for r in rows], dtype=float)
        return Moments(len(rows), sum(r[4] for r in rows), x.sum(axis=0), x.T @ x)


def simulate(
    seed: int = 0, users: int = 80, days: int = 4, experiment: str = "exp", first: int = FIRST
) -> Logged:
    """Users who join on some day of the experiment, with history in another experiment around it."""
    rng = np.random.default_rng(seed)
    logged = Logged()
    for u in range(users):
        user, arm = f"u{u}", ("control", "treatment")[u % 2]
        joined, activity, p = first + int(rng.integers(0, days)), rng.gamma(2.0, 1.5), rng.beta(1, 9)
        for day in range(joined - 20, joined + 2):  # history before, and after, the user joins
            if u % 5 and rng.random() < 0.5:
                impressions = int(rng.poisson(activity)) + 1
                downloads = int(rng.binomial(impressions, p))
                logged.add("older", "x", user, day, impressions, downloads)
                if joined - LOOKBACK <= day < joined:
                    pre = logged.pre.setdefault(user, [0, 0])
                    pre[0], pre[1] = pre[0] + impressions, pre[1] + downloads
        for day in range(joined, first + days):
            if day == joined or rng.random() < 0.6:
                impressions = int(rng.poisson(activity * 2)) + 1
                downloads = int(rng.binomial(impressions, min(1.0, p * (1.3 if arm == "treatment" else 1))))
                logged.add(experiment, arm, user, day, impressions, downloads)
                logged.post.setdefault((arm, user), {})[day] = [impressions, downloads]
    return logged
