"""The report's one query: per (arm, day) sums from which every figure of the report is computed.

The unit is the user of an arm. For user u, let I and D be the impressions and downloads since the
window's start (cumulative: as of a day), and Ip, Dp the impressions and downloads of the CUPED
pre-period: the ``lookback`` days before the user's first day in the experiment, over the whole event
store (any experiment), so nothing the experiment changed leaks into the covariate. Users without
events in their pre-period get Ip = Dp = 0 (they stay in the analysis; see README: CUPED).

Sums of squares of cumulative counts do not add over days, so the query returns, per (arm, day), the
change that day brings to every sum: a user whose cumulative impressions go from c - i to c adds
c^2 - (c - i)^2 to sum I^2; a user seen for the first time adds 1 to n and their pre-period terms
(a user-day row exists only with an event in it, so the first row is the one whose cumulative counts
equal its own). ``accumulate`` adds the changes up day by day (O(arms x days) in Python); the SQL does
the O(user-days) work with one running sum per user (a window function, in primary-key order: no
sort) and joins each user's pre-period once. The join orders are spelled out for SQLite's planner
(``CROSS JOIN`` keeps the big table outside and the small per-user side behind an automatic index;
``MATERIALIZED`` lets it index the CTEs); PostgreSQL plans them as ordinary hash joins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.db import Database
from service.report.stats import UserSums

FloatArray = npt.NDArray[np.float64]
VARIABLES = ("d", "i", "dp", "ip")  # downloads, impressions, pre-period downloads, pre-period impressions
DL, IMP, PRE_DL, PRE_IMP = range(4)  # indices into VARIABLES
_PAIRS = [(a, b) for a in range(4) for b in range(a, 4)]

_REPORT_SUMS = """
WITH exposed AS MATERIALIZED (
    SELECT user_id, MIN(first_day) AS first_day FROM (
        SELECT arm, user_id, MIN(day) AS first_day FROM {p}event_user_days WHERE experiment = ?
        GROUP BY arm, user_id
    ) AS per_arm
    GROUP BY user_id
),
pre AS MATERIALIZED (
    SELECT u.user_id, SUM(u.impressions) AS ip, SUM(u.downloads) AS dp
    FROM {p}event_user_days AS u CROSS JOIN exposed AS x
    WHERE x.user_id = u.user_id AND u.day >= x.first_day - ? AND u.day < x.first_day
    GROUP BY u.user_id
),
running AS (
    SELECT e.arm, e.day, e.impressions AS i, e.downloads AS d,
           SUM(e.impressions) OVER w AS ci, SUM(e.downloads) OVER w AS cd,
           CASE WHEN p.user_id IS NULL THEN 0 ELSE 1 END AS has_pre,
           COALESCE(p.ip, 0) AS ip, COALESCE(p.dp, 0) AS dp
    FROM {p}event_user_days AS e LEFT JOIN pre AS p ON p.user_id = e.user_id
    WHERE e.experiment = ? AND e.day >= ? AND e.day <= ?
    WINDOW w AS (PARTITION BY e.arm, e.user_id ORDER BY e.day ROWS UNBOUNDED PRECEDING)
),
flagged AS (
    SELECT running.*, CASE WHEN ci = i AND cd = d THEN 1 ELSE 0 END AS is_first FROM running
)
SELECT arm, day,
       COUNT(*), SUM(i), SUM(d), SUM(i * i), SUM(d * d), SUM(i * d),
       SUM(is_first), SUM(is_first * has_pre),
       SUM(d), SUM(i), SUM(is_first * dp), SUM(is_first * ip),
       SUM(cd * cd - (cd - d) * (cd - d)), SUM(cd * ci - (cd - d) * (ci - i)),
       SUM(d * dp), SUM(d * ip),
       SUM(ci * ci - (ci - i) * (ci - i)), SUM(i * dp), SUM(i * ip),
       SUM(is_first * dp * dp), SUM(is_first * dp * ip), SUM(is_first * ip * ip)
FROM flagged
GROUP BY arm, day
ORDER BY arm, day
"""


@dataclass(frozen=True)
class DaySums:
    """Users active on one day of an arm and their sums over that day only (sum I, D, I^2, D^2, I*D)."""

    users: int
    impressions: float
    downloads: float
    sum_ii: float
    sum_dd: float
    sum_id: float


@dataclass(frozen=True)
class Moments:
    """First and second moments over users of (D, I, Dp, Ip) (``VARIABLES``) for one arm.

    Attributes:
        n: users; ``with_history``: those with events in their pre-period.
        s: sums of the four variables, shape [4].
        q: sums of their products, shape [4, 4] (symmetric).
    """

    n: int
    with_history: int
    s: FloatArray
    q: FloatArray

    @classmethod
    def zero(cls) -> Moments:
        return cls(0, 0, np.zeros(4), np.zeros((4, 4)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.n + other.n, self.with_history + other.with_history, self.s + other.s, self.q + other.q
        )

    def user_sums(self) -> UserSums:
        """The (D, I) part, in the terms of the fixed-horizon estimators."""
        s, q = self.s, self.q
        return UserSums(
            self.n, float(s[IMP]), float(s[DL]), float(q[IMP, IMP]), float(q[DL, DL]), float(q[IMP, DL])
        )

    def mean(self) -> FloatArray:
        """The four means (zeros when there is no user)."""
        return self.s / self.n if self.n else np.zeros(4)

    def covariance(self) -> FloatArray:
        """The 4 x 4 sample covariance (n - 1 in the denominator); zeros below two users."""
        if self.n < 2:
            return np.zeros((4, 4))
        mean = self.s / self.n
        covariance: FloatArray = (self.q - self.n * np.outer(mean, mean)) / (self.n - 1)
        return covariance


@dataclass(frozen=True)
class ArmDay:
    """One (arm, day) row: that day's own figures and the change it brings to the cumulative moments."""

    arm: str
    day: int
    own: DaySums
    change: Moments


@dataclass(frozen=True)
class ArmHistory:
    """One arm's cumulative moments as of each day it had users, in day order."""

    days: list[int]
    moments: list[Moments]

    def as_of(self, day: int) -> Moments:
        """The moments as of ``day`` (the last day at or before it; zero before the first)."""
        found = Moments.zero()
        for known, moments in zip(self.days, self.moments, strict=True):
            if known > day:
                break
            found = moments
        return found


class ReportStore(Protocol):
    """Where the report reads from: the event store's database and table prefix."""

    @property
    def db(self) -> Database: ...
    @property
    def prefix(self) -> str: ...


def read_arm_days(
    store: ReportStore, experiment: str, first_day: int, last_day: int, lookback_days: int
) -> list[ArmDay]:
    """The (arm, day) rows of ``experiment`` for days in [first_day, last_day]."""
    query = _REPORT_SUMS.format(p=store.prefix)
    params = (experiment, lookback_days, experiment, first_day, last_day)
    with store.db.read() as cursor:
        cursor.execute(store.db.sql(query), params)
        rows = cursor.fetchall()
    return [_arm_day(row) for row in rows]


def _arm_day(row: Sequence[Any]) -> ArmDay:
    arm, day, *numbers = row
    values = [float(0 if v is None else v) for v in numbers]
    own = DaySums(int(values[0]), *values[1:6])
    s = np.asarray(values[8:12])
    q = np.zeros((4, 4))
    for (a, b), value in zip(_PAIRS, values[12:], strict=True):
        q[a, b] = q[b, a] = value
    return ArmDay(str(arm), int(day), own, Moments(int(values[6]), int(values[7]), s, q))


def accumulate(rows: Iterable[ArmDay]) -> dict[str, ArmHistory]:
    """Per arm, the running totals of the daily changes: the moments as of each day."""
    histories: dict[str, ArmHistory] = {}
    for row in sorted(rows, key=lambda r: (r.arm, r.day)):
        history = histories.setdefault(row.arm, ArmHistory([], []))
        previous = history.moments[-1] if history.moments else Moments.zero()
        history.days.append(row.day)
        history.moments.append(previous + row.change)
    return histories
