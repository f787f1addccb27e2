"""The report's per (arm, day) rows on both stores against a direct computation from the raw events.

Random events of three experiments: users in one arm or both, gaps between active days, downloads a
day after their impression (counted on the impression's day) and downloads with no impression at all
(not counted), in the experiment and in the CUPED pre-period alike. The reference walks the event list
in Python with none of the store's tables or the report's numpy: per user, the cumulative counts as of
each day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pytest

from service.events.store import SqlEventStore
from service.report.sums import ArmDay, Moments, accumulate, read_arm_days

pytest_plugins = ["tests.service.test_events_support"]
DAY = 86400
FIRST = 20_100
LOOKBACK = 5
Key = tuple[str, str, str, int]  # experiment, arm, user, day


@dataclass
class Events:
    """Event rows as inserted (``sql.EVENT_COLUMNS`` order), and each impression's user-day."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    shown: dict[tuple[str, str], Key] = field(default_factory=dict)

    def add(self, kind: str, request: str, app: str, key: Key, hour: int) -> None:
        experiment, arm, user, day = key
        ts = day * DAY + 3600.0 * hour
        self.rows.append((f"e{len(self.rows)}", kind, request, app, user, ts, day, ts, experiment, arm))
        if kind == "impression":
            self.shown[(request, app)] = key

    def counted(self) -> dict[Key, list[int]]:
        """Per (experiment, arm, user, day): impressions, and the downloads of that day's impressions."""
        counts: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
        for _, kind, request, app, user, _, day, _, experiment, arm in self.rows:
            pair = counts[(str(experiment), str(arm), str(user), int(str(day)))]
            if kind == "impression":
                pair[0] += 1
            elif (str(request), str(app)) in self.shown:
                counts[self.shown[(str(request), str(app))]][1] += 1
        return dict(counts)


def simulate(seed: int) -> Events:
    rng = np.random.default_rng(seed)
    events = Events()
    for u in range(60):
        user = f"u{u}"
        arms = ["control", "treatment"] if u % 7 == 0 else [("control", "treatment")[u % 2]]
        for experiment, arm_choices, days in (
            ("exp", arms, range(FIRST, FIRST + 6)),
            ("older", ["x"], range(FIRST - 9, FIRST + 2)),
            ("other", ["y", "z"], range(FIRST - 3, FIRST + 1)),
        ):
            for day in days:
                if rng.random() < 0.45:
                    arm = str(rng.choice(arm_choices))
                    visit(events, rng, (experiment, arm, user, day))
        if u % 11 == 3:  # only downloads with no impression: not a user of the experiment
            events.add("download", f"ghost-{u}", "a", ("exp", arms[0], user, FIRST + 2), 5)
    return events


def visit(events: Events, rng: np.random.Generator, key: Key) -> None:
    """One served list: some apps shown, some downloaded, now and then a stray or next-day download."""
    request = f"{key[0]}-{key[2]}-{key[3]}"
    for k in range(int(rng.integers(0, 5))):
        events.add("impression", request, f"a{k}", key, 1)
        if rng.random() < 0.3:
            later = rng.random() < 0.2  # downloaded the next day: a user-day with downloads only
            events.add("download", request, f"a{k}", (*key[:3], key[3] + int(later)), 2)
    if rng.random() < 0.25:  # a download of an app never shown in that request
        events.add("download", request, "stray", key, 3)


def reference(
    events: Events, first_day: int, last_day: int
) -> dict[tuple[str, int], tuple[list[int], Moments]]:
    """Per (arm, day) with users that day: [users, I, D, I^2, D^2, I*D] of the day, and moments as of it."""
    counts = events.counted()
    mine = {(a, u, d): c for (e, a, u, d), c in counts.items() if e == "exp" and (c[0] or c[1])}
    start = {u: min(d for (_, v, d) in mine if v == u) for (_, u, _) in mine}
    pre: dict[str, list[int]] = {}
    for (_, _, u, d), (i, dl) in counts.items():
        if u in start and start[u] - LOOKBACK <= d < start[u] and (i or dl):
            pre.setdefault(u, [0, 0])
            pre[u][0] += i
            pre[u][1] += dl
    result: dict[tuple[str, int], tuple[list[int], Moments]] = {}
    for arm, day in sorted({(a, d) for (a, _, d) in mine if first_day <= d <= last_day}):
        today = [c for (a, _, d), c in mine.items() if a == arm and d == day]
        own = [len(today), sum(i for i, _ in today), sum(d for _, d in today)]
        own += [sum(i * i for i, _ in today), sum(d * d for _, d in today), sum(i * d for i, d in today)]
        vectors, with_history = [], 0
        for user in sorted({u for (a, u, d) in mine if a == arm and first_day <= d <= day}):
            days = [c for (a, v, d), c in mine.items() if (a, v) == (arm, user) and first_day <= d <= day]
            ip, dp = pre.get(user, [0, 0])
            with_history += user in pre
            vectors.append([sum(c[1] for c in days), sum(c[0] for c in days), dp, ip])
        x = np.array(vectors, dtype=float)
        result[(arm, day)] = (own, Moments(len(vectors), with_history, x.sum(axis=0), x.T @ x))
    return result


def check(rows: list[ArmDay], expected: dict[tuple[str, int], tuple[list[int], Moments]]) -> None:
    assert sorted((row.arm, row.day) for row in rows) == sorted(expected)
    histories = accumulate(rows)
    for row in rows:
        own, truth = expected[(row.arm, row.day)]
        o = row.own
        assert [o.users, o.impressions, o.downloads, o.sum_ii, o.sum_dd, o.sum_id] == own
        ours = histories[row.arm].as_of(row.day)
        assert (ours.n, ours.with_history) == (truth.n, truth.with_history)
        assert ours.s.tolist() == truth.s.tolist() and ours.q.tolist() == truth.q.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_match_the_events_counted_directly(store: SqlEventStore, seed: int) -> None:
    events = simulate(seed)
    store.insert_events_unchecked(events.rows)
    store.rebuild_user_days()
    check(read_arm_days(store, "exp", 0, 10**7, LOOKBACK), reference(events, 0, 10**7))
    check(
        read_arm_days(store, "exp", FIRST + 2, FIRST + 4, LOOKBACK), reference(events, FIRST + 2, FIRST + 4)
    )


def test_the_data_has_what_the_rule_is_about(store: SqlEventStore) -> None:
    """The simulated store holds stray downloads and next-day downloads (else the test proves little)."""
    events = simulate(0)
    items = [(str(row[2]), str(row[3]), row[6]) for row in events.rows if row[1] == "download"]
    stray = [item for item in items if item[:2] not in events.shown]
    moved = [item for item in items if item[:2] in events.shown and events.shown[item[:2]][3] != item[2]]
    ghosts = {u for (e, _, u, _), (i, d) in events.counted().items() if e == "exp" and i == d == 0}
    assert len(stray) >= 20 and len(moved) >= 10 and ghosts
    assert not read_arm_days(store, "exp", 0, 10**7, LOOKBACK)  # an empty store: no rows
