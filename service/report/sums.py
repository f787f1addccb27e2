"""The report's per (arm, day) sums, from which every figure of the report is computed.

The unit is the user of an arm. For user u, let I and D be the impressions and downloads since the
window's start (cumulative: as of a day), and Ip, Dp the impressions and downloads of the CUPED
pre-period: the ``lookback`` days before the user's first day in the experiment, over the whole event
store (any experiment), so nothing the experiment changed leaks into the covariate. Users without
events in their pre-period get Ip = Dp = 0 (they stay in the analysis; see README: CUPED). Downloads
count only with an impression of the same (request, app), on its day (``userdays``: the download rule).

Sums of squares of cumulative counts do not add over days, so each (arm, day) row holds the change
that day brings to every sum: a user whose cumulative impressions go from c - i to c adds
c^2 - (c - i)^2 to sum I^2; a user seen for the first time adds 1 to n and their pre-period terms.
``accumulate`` adds the changes up day by day (O(arms x days) in Python). The O(user-days) work is
numpy over the per-user-day rows read once in (arm, user, day) order (``userdays``): running sums
per user restarted at each user, then one weighted bincount per sum. (A SQL window function doing the
same running sums was the report's cost on SQLite: it sorts and materialises every user-day.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from service.db import Database
from service.report.stats import UserSums
from service.report.userdays import (
    IntArray,
    PrePeriod,
    RowKey,
    UserDays,
    corrected,
    download_corrections,
    pre_period,
    read_user_days,
    snapshot,
)

FloatArray = npt.NDArray[np.float64]
VARIABLES = ("d", "i", "dp", "ip")  # downloads, impressions, pre-period downloads, pre-period impressions
DL, IMP, PRE_DL, PRE_IMP = range(4)  # indices into VARIABLES
PAIRS = [(a, b) for a in range(4) for b in range(a, 4)]


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
    db, prefix = store.db, store.prefix
    with snapshot(db) as cursor:
        rows = read_user_days(db, cursor, prefix, experiment)
        changes: dict[RowKey, int] = {}
        if rows.day.size:  # the pre-period lies within lookback_days before the first day
            low = int(rows.day.min()) - lookback_days
            changes = download_corrections(db, cursor, prefix, low, int(rows.day.max()))
            rows = corrected(rows, experiment, changes)
        pre = pre_period(db, cursor, prefix, experiment, rows, lookback_days, changes)
    return arm_days(rows, pre, first_day, last_day)


def arm_days(rows: UserDays, pre: PrePeriod, first_day: int, last_day: int) -> list[ArmDay]:
    """Per (arm, day) of the window, that day's own sums and the change it brings to the moments."""
    inside = (rows.day >= first_day) & (rows.day <= last_day)
    window = rows if inside.all() else rows.select(inside)
    if not window.group.size:
        return []
    names = sorted(set(rows.arms))
    arm_code = np.searchsorted(np.asarray(names, dtype=object), np.asarray(rows.arms, dtype=object))
    low, span = int(window.day.min()), int(window.day.max()) - int(window.day.min()) + 1
    key = arm_code[window.group] * span + (window.day - low)
    table = _day_sums(window, pre, key, len(names) * span)
    present = np.flatnonzero(table[0] > 0)
    return [
        _arm_day(names[int(k) // span], low + int(k) % span, table[:, k].tolist()) for k in present.tolist()
    ]


def _day_sums(rows: UserDays, pre: PrePeriod, key: IntArray, size: int) -> FloatArray:
    """The 22 sums of ``_arm_day``'s order per ``key`` (arm and day), shape [22, size].

    Every term is a sum of integers (exact in float64 below 2**53) over rows in (arm, user, day)
    order: a user's running totals are a cumulative sum restarted at the user's first row, and the
    first-seen and pre-period terms sum over those first rows only. Terms are computed one after the
    other so that few row-sized arrays live at once (the report's peak memory).
    """

    def total(weights: FloatArray | None, keys: IntArray = key) -> FloatArray:
        return np.bincount(keys, weights=weights, minlength=size).astype(np.float64)

    i, d = rows.impressions.astype(np.float64), rows.downloads.astype(np.float64)
    starts = np.flatnonzero(np.r_[True, rows.group[1:] != rows.group[:-1]])
    first, first_key = rows.group[starts], key[starts]
    ip, dp, has = (x[first].astype(np.float64) for x in (pre.impressions, pre.downloads, pre.has_history))
    t = {"n": total(None), "i": total(i), "d": total(d), "ii": total(i * i), "dd": total(d * d)}
    t |= {"id": total(i * d), "first": total(None, first_key), "has": total(has, first_key)}
    t |= {"dp1": total(dp, first_key), "ip1": total(ip, first_key), "dpdp": total(dp * dp, first_key)}
    t |= {"dpip": total(dp * ip, first_key), "ipip": total(ip * ip, first_key)}
    cd = _running(d, starts)
    t["cdd"] = total(d * (2 * cd - d))
    ci = _running(i, starts)
    t["cid"] = total(ci * d + cd * i - i * d)
    del cd
    t["cii"] = total(i * (2 * ci - i))
    del ci
    for name, per_user in (("dp", pre.downloads), ("ip", pre.impressions)):
        per_row = per_user[rows.group].astype(np.float64)
        t["d" + name], t["i" + name] = total(d * per_row), total(i * per_row)
    order = ["n", "i", "d", "ii", "dd", "id", "first", "has", "d", "i", "dp1", "ip1", "cdd", "cid", "ddp"]
    order += ["dip", "cii", "idp", "iip", "dpdp", "dpip", "ipip"]
    return np.stack([t[name] for name in order])


def _running(values: FloatArray, starts: IntArray) -> FloatArray:
    """Cumulative sums of ``values`` restarted at each of ``starts`` (the first rows of the groups)."""
    cumulative = np.cumsum(values)
    before = cumulative[starts] - values[starts]
    lengths = np.diff(np.r_[starts, values.size])
    running: FloatArray = cumulative - np.repeat(before, lengths)
    return running


def _arm_day(arm: str, day: int, values: Sequence[float]) -> ArmDay:
    own = DaySums(int(values[0]), *values[1:6])
    s = np.asarray(values[8:12])
    q = np.zeros((4, 4))
    for (a, b), value in zip(PAIRS, values[12:], strict=True):
        q[a, b] = q[b, a] = value
    return ArmDay(arm, day, own, Moments(int(values[6]), int(values[7]), s, q))


def accumulate(rows: Iterable[ArmDay]) -> dict[str, ArmHistory]:
    """Per arm, the running totals of the daily changes: the moments as of each day."""
    histories: dict[str, ArmHistory] = {}
    for row in sorted(rows, key=lambda r: (r.arm, r.day)):
        history = histories.setdefault(row.arm, ArmHistory([], []))
        previous = history.moments[-1] if history.moments else Moments.zero()
        history.days.append(row.day)
        history.moments.append(previous + row.change)
    return histories
