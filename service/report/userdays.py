"""Reading one experiment's per-user-day counts into numpy arrays, under the report's download rule.

The report's statistics need, per (arm, user), the counts of every day in day order (the cumulative
figures as of each day are running sums over them) and each user's CUPED pre-period. The rows come
from ``event_user_days`` in its primary-key order (experiment, arm, user, day), so neither store sorts;
the running sums are then numpy work (``sums.read_arm_days``), not a SQL window function.

Python objects are the cost of reading millions of rows, so the rows travel as one packed integer each
(day offset, impressions, downloads) and the user ids once per (arm, user) group, from a second query
on the same snapshot. A row whose numbers do not fit the packing is read unpacked (never in practice).

**The download rule** (README: Report): a download counts only as the conversion of a stored
impression of the same (request, app), whichever arrived first, and on that impression's day; so
every count of downloads (an arm's, a day's, a window's) is at most its count of impressions. The
per-user-day counts hold every download on its own day, so ``download_corrections`` finds in the
events (an index of downloads by day, one probe of the unique (request, app, type) index each) those
with no impression, which are taken away, and those whose impression is on another day, which move to
it; a user-day left with no event at all is dropped, as if those downloads had never been posted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from service.db import Cursor, Database

IntArray = npt.NDArray[np.int64]
RowKey = tuple[str, str, str, int]  # (experiment, arm, user, day)
_DAY_BITS, _IMP_BITS, _DL_BITS = 18, 23, 22  # 63 bits: a signed 64-bit integer in both stores
_FITS = f"day - ? < {1 << _DAY_BITS} AND impressions < {1 << _IMP_BITS} AND downloads < {1 << _DL_BITS}"

_DAY_RANGE = "SELECT MIN(day), MAX(day) FROM {p}event_user_days WHERE experiment = ?"
_GROUPS = (
    "SELECT arm, user_id, COUNT(*) FROM {p}event_user_days WHERE experiment = ? "
    "GROUP BY arm, user_id ORDER BY arm, user_id"
)
_PACKED = (
    f"SELECT CASE WHEN {_FITS} THEN ((day - ?) * {1 << _IMP_BITS} + impressions) * {1 << _DL_BITS} "
    "+ downloads ELSE -1 END FROM {p}event_user_days WHERE experiment = ? ORDER BY arm, user_id, day"
)
_UNPACKED = (
    "SELECT day, impressions, downloads FROM {p}event_user_days "
    f"WHERE experiment = ? AND NOT ({_FITS}) ORDER BY arm, user_id, day"
)
# Every experiment name, one index seek each (a loose index scan: no pass over the rows).
_EXPERIMENTS = """
WITH RECURSIVE names (name) AS (
    SELECT MIN(experiment) FROM {p}event_user_days
    UNION ALL
    SELECT (SELECT MIN(experiment) FROM {p}event_user_days WHERE experiment > names.name)
    FROM names WHERE names.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL
"""
_OTHER_ROWS = (
    "SELECT arm, user_id, day, impressions, downloads FROM {p}event_user_days "
    "WHERE experiment = ? AND day >= ? AND day < ?"
)
_MISPLACED_DOWNLOADS = """
SELECT d.experiment, d.arm, d.user_id, d.day, i.day, COUNT(*) FROM {p}events AS d
LEFT JOIN {p}events AS i ON i.request_id = d.request_id AND i.app_id = d.app_id AND i.type = 'impression'
WHERE d.type = 'download' AND d.day >= ? AND d.day <= ? AND (i.day IS NULL OR i.day <> d.day)
GROUP BY d.experiment, d.arm, d.user_id, d.day, i.day
"""


@dataclass(frozen=True)
class UserDays:
    """Per-user-day counts grouped by (arm, user), days ascending within a group.

    Attributes:
        arms, users: per group, its arm and user id (groups in the store's (arm, user) order).
        group: per row, the index of its group (non-decreasing).
        day, impressions, downloads: per row.
    """

    arms: list[str]
    users: list[str]
    group: IntArray
    day: IntArray
    impressions: IntArray
    downloads: IntArray

    def select(self, rows: npt.NDArray[np.bool_]) -> UserDays:
        """The rows where ``rows`` is true (groups keep their indices, empty ones included)."""
        return UserDays(
            self.arms,
            self.users,
            self.group[rows],
            self.day[rows],
            self.impressions[rows],
            self.downloads[rows],
        )

    def first_days(self) -> IntArray:
        """Per group, its first day (every group has a row)."""
        starts = np.searchsorted(self.group, np.arange(len(self.arms)))
        return self.day[starts]


@dataclass(frozen=True)
class PrePeriod:
    """Per group, the pre-period impressions and downloads of its user and whether there were any."""

    impressions: IntArray
    downloads: IntArray
    has_history: IntArray


@contextmanager
def snapshot(db: Database) -> Iterator[Cursor]:
    """A cursor whose queries all see the same state of the store (one read transaction)."""
    with db.read() as cursor:
        if db.dialect == "sqlite":
            cursor.execute("BEGIN")
            try:
                yield cursor
            finally:
                cursor.execute("COMMIT")  # a read-only transaction: ending it is all COMMIT does
        else:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cursor


def read_user_days(db: Database, cursor: Cursor, prefix: str, experiment: str) -> UserDays:
    """Every per-user-day row of ``experiment``, as stored (before the download rule)."""
    cursor.execute(db.sql(_DAY_RANGE.format(p=prefix)), (experiment,))
    base, _ = cursor.fetchone()
    cursor.execute(db.sql(_GROUPS.format(p=prefix)), (experiment,))
    groups = cursor.fetchall()
    if base is None or not groups:
        empty = np.zeros(0, dtype=np.int64)
        return UserDays([], [], empty, empty, empty, empty)
    sizes = np.fromiter((row[2] for row in groups), dtype=np.int64, count=len(groups))
    cursor.execute(db.sql(_PACKED.format(p=prefix)), (base, base, experiment))
    # Streamed from the cursor: a list of millions of row tuples would be most of the report's memory.
    rows = cast(Iterable[tuple[int]], cursor)  # sqlite3 and psycopg cursors iterate over their rows
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64)
    if values.size != int(sizes.sum()):
        raise RuntimeError(f"{experiment}: {values.size} user-day rows read, {int(sizes.sum())} counted")
    day = (values >> (_IMP_BITS + _DL_BITS)) + int(base)
    impressions = (values >> _DL_BITS) & ((1 << _IMP_BITS) - 1)
    downloads = values & ((1 << _DL_BITS) - 1)
    unfit = np.flatnonzero(values < 0)
    if unfit.size:
        cursor.execute(db.sql(_UNPACKED.format(p=prefix)), (experiment, base))
        wide = np.asarray(cursor.fetchall(), dtype=np.int64).reshape(-1, 3)
        day[unfit], impressions[unfit], downloads[unfit] = wide[:, 0], wide[:, 1], wide[:, 2]
    return UserDays(
        arms=[str(row[0]) for row in groups],
        users=[str(row[1]) for row in groups],
        group=np.repeat(np.arange(len(groups), dtype=np.int64), sizes),
        day=day,
        impressions=impressions,
        downloads=downloads,
    )


def download_corrections(
    db: Database, cursor: Cursor, prefix: str, first: int, last: int
) -> dict[RowKey, int]:
    """What the download rule changes in the downloads of each user-day, for downloads dated in [first, last].

    A download without an impression is taken away; one whose impression is on another day moves there
    (the impression's user-day exists: a download and its impression share request, so experiment,
    arm and user). Keys with no net change are left out.
    """
    cursor.execute(db.sql(_MISPLACED_DOWNLOADS.format(p=prefix)), (first, last))
    changes: dict[RowKey, int] = {}
    for experiment, arm, user, day, impression_day, count in cursor.fetchall():
        key = (str(experiment), str(arm), str(user))
        changes[(*key, int(day))] = changes.get((*key, int(day)), 0) - int(count)
        if impression_day is not None:
            changes[(*key, int(impression_day))] = changes.get((*key, int(impression_day)), 0) + int(count)
    return {key: change for key, change in changes.items() if change}


def corrected(rows: UserDays, experiment: str, changes: Mapping[RowKey, int]) -> UserDays:
    """``rows`` with the download rule's changes; user-days and groups left with no event dropped."""
    mine = {(a, u, d): n for (e, a, u, d), n in changes.items() if e == experiment}
    if not mine:
        return rows
    index = {key: g for g, key in enumerate(zip(rows.arms, rows.users, strict=True))}
    starts = np.searchsorted(rows.group, np.arange(len(rows.arms) + 1))
    downloads = rows.downloads.copy()
    for (arm, user, day), change in mine.items():
        g = index.get((arm, user))
        if g is None:
            continue
        at = starts[g] + int(np.searchsorted(rows.day[starts[g] : starts[g + 1]], day))
        if at < starts[g + 1] and rows.day[at] == day:
            downloads[at] = max(0, downloads[at] + change)
    keep = (rows.impressions > 0) | (downloads > 0)
    kept_groups, group = np.unique(rows.group[keep], return_inverse=True)
    return UserDays(
        arms=[rows.arms[g] for g in kept_groups.tolist()],
        users=[rows.users[g] for g in kept_groups.tolist()],
        group=group.astype(np.int64),
        day=rows.day[keep],
        impressions=rows.impressions[keep],
        downloads=downloads[keep],
    )


def user_codes(rows: UserDays) -> tuple[IntArray, dict[str, int]]:
    """Per group, a dense code of its user (the same user in two arms gets one code), and the codes."""
    codes: dict[str, int] = {}
    per_group = [codes.setdefault(user, len(codes)) for user in rows.users]
    return np.asarray(per_group, dtype=np.int64), codes


def pre_period(
    db: Database,
    cursor: Cursor,
    prefix: str,
    experiment: str,
    rows: UserDays,
    lookback_days: int,
    changes: Mapping[RowKey, int],
) -> PrePeriod:
    """Each group's user's events in the ``lookback_days`` before their first day in the experiment.

    The pre-period is the user's, across every other experiment of the store (rows of this experiment
    come on or after its first day by definition), under the same download rule (``changes``: a
    download moved into the pre-period from a day outside the store's rows read is not seen).
    """
    zeros = np.zeros(len(rows.arms), dtype=np.int64)
    if lookback_days == 0 or not rows.arms:
        return PrePeriod(zeros, zeros, zeros)
    code, codes = user_codes(rows)
    first = np.full(len(codes), np.iinfo(np.int64).max)
    np.minimum.at(first, code, rows.first_days())
    low, high = int(first.min()) - lookback_days, int(first.max())
    cursor.execute(_EXPERIMENTS.format(p=prefix))
    others = [str(name) for (name,) in cursor.fetchall() if name != experiment]
    found: list[tuple[int, int, int, int]] = []
    for other in others:
        cursor.execute(db.sql(_OTHER_ROWS.format(p=prefix)), (other, low, high))
        for arm, user, day, impressions, downloads in cursor.fetchall():
            u = codes.get(str(user))
            kept = downloads + changes.get((other, str(arm), str(user), int(day)), 0)
            if u is not None and (impressions > 0 or kept > 0):
                found.append((u, int(day), int(impressions), max(0, int(kept))))
    table = np.asarray(found, dtype=np.int64).reshape(-1, 4)
    users, day = table[:, 0], table[:, 1]
    inside = (day >= first[users] - lookback_days) & (day < first[users])
    users = users[inside]
    size = len(codes)
    impressions = np.bincount(users, weights=table[inside, 2], minlength=size).astype(np.int64)
    downloads = np.bincount(users, weights=table[inside, 3], minlength=size).astype(np.int64)
    has_history = (np.bincount(users, minlength=size) > 0).astype(np.int64)
    return PrePeriod(impressions[code], downloads[code], has_history[code])
