"""The event store on both dialects: served-list rows, event checks, idempotency, aggregates, retention."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from service.events.models import ArmDaySums, EventIn
from service.events.store import SqlEventStore
from service.rank.served import ServedList
from tests.service.test_events_support import event_in, served_list

pytest_plugins = ["tests.service.test_events_support"]

DAY = 86400.0


def test_migrate_twice_is_harmless(store: SqlEventStore) -> None:
    store.migrate()
    with store.db.read() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {store.prefix}events")
        assert cursor.fetchone()[0] == 0


def test_served_list_becomes_one_row_per_returned_item(store: SqlEventStore) -> None:
    served = served_list("r1", app_ids=("a", "b", "c"), top_k=2)
    assert store.write_served([served]) == 2
    with store.db.read() as cursor:
        columns = "i.position, i.app_id, i.ctr, i.bid, f.features_json"
        cursor.execute(
            f"SELECT {columns} FROM {store.prefix}served_items AS i "
            f"JOIN {store.prefix}item_features AS f ON f.feature_id = i.feature_id ORDER BY i.position"
        )
        items = cursor.fetchall()
        cursor.execute(
            f"SELECT user_id, arm, bucket, model, user_json, context_json FROM {store.prefix}served_lists"
        )
        listed = cursor.fetchone()
    # CTRs are 0.10, 0.11, 0.12: best first is c then b; a was scored but not returned
    assert [(p, a) for p, a, *_ in items] == [(1, "c"), (2, "b")]
    assert [ctr for _, _, ctr, _, _ in items] == pytest.approx(
        [float(served.ctr[2]), float(served.ctr[1])], abs=0
    )
    assert [bid for *_, bid, _ in items] == [3.0, 2.0]
    assert orjson.loads(items[0][4]) == {"category": "cat0", "rating": 4.2}
    assert tuple(listed[:4]) == ("u1", "control", 42, "lr")
    assert orjson.loads(listed[4]) == {"user_id": "u1", "installed": ["x", "y"]}
    assert orjson.loads(listed[5]) == {"country": "Spain", "hour": 9}


def test_a_batch_larger_than_one_statement_is_written_whole(store: SqlEventStore) -> None:
    # rows go in multi-row statements of max_rows_per_statement: several statements, a partial last one
    apps = [f"app{i}" for i in range(150)]
    lists = [served_list(f"r{k}", app_ids=apps) for k in range(17)]
    assert store.write_served(lists) == 17 * 150 > 2 * store.max_rows_per_statement
    with store.db.read() as cursor:
        cursor.execute(
            f"SELECT request_id, COUNT(*), MIN(position), MAX(position) FROM "
            f"{store.prefix}served_items GROUP BY request_id"
        )
        per_list = sorted(cursor.fetchall())
        cursor.execute(f"SELECT COUNT(*) FROM {store.prefix}served_lists")
        assert cursor.fetchone()[0] == 17
    assert per_list == sorted((f"r{k}", 150, 1, 150) for k in range(17))
    assert store.write_served(lists) == 17 * 150  # a resent batch is harmless (ON CONFLICT DO NOTHING)


def test_valid_events_are_accepted_and_counted_by_arm(store: SqlEventStore) -> None:
    store.write_served([served_list("r1", arm="treatment")])
    (outcome,) = store.record_events(
        [[event_in(1), event_in(2, app_id="b"), event_in(3, "download")]], time.time()
    )
    assert (outcome.accepted, outcome.duplicates, outcome.rejected) == (3, 0, [])
    assert outcome.accepted_by_arm == {
        ("exp", "treatment", "impression"): 2,
        ("exp", "treatment", "download"): 1,
    }


def test_resent_events_are_duplicates_and_counted_once(store: SqlEventStore) -> None:
    store.write_served([served_list("r1")])
    now = time.time()
    store.record_events([[event_in(1), event_in(2, "download")]], now)
    (again,) = store.record_events([[event_in(1), event_in(2, "download")]], now)
    assert (again.accepted, again.duplicates) == (0, 2)
    # a new id for an item and type already logged in that request is a duplicate too
    (same_item,) = store.record_events([[event_in(9, app_id="a")]], now)
    assert (same_item.accepted, same_item.duplicates) == (0, 1)
    # the same id twice in one batch, and in two batches of one group commit
    first, second = store.record_events(
        [[event_in(5, app_id="b"), event_in(5, app_id="b")], [event_in(5, app_id="b")]], now
    )
    assert (first.accepted, first.duplicates, second.accepted, second.duplicates) == (1, 1, 0, 1)
    overall = [row for row in store.arm_sums("exp", 0, 10**7) if row.day is None]
    assert [(r.users, r.impressions, r.downloads) for r in overall] == [(1, 2, 1)]


def test_a_reused_event_id_is_credited_to_the_event_actually_stored(store: SqlEventStore) -> None:
    store.write_served([served_list("r1"), served_list("r2", arm="treatment")])
    now = time.time()
    store.record_events([[event_in(1, request_id="r1", app_id="a")]], now)
    # the first "x" conflicts with the stored impression of (r1, a); the second "x" is new
    (outcome,) = store.record_events(
        [
            [
                event_in(7, request_id="r1", app_id="a", event_id="x"),
                event_in(8, request_id="r2", event_id="x"),
            ]
        ],
        now,
    )
    assert (outcome.accepted, outcome.duplicates) == (1, 1)
    assert outcome.accepted_by_arm == {("exp", "treatment", "impression"): 1}
    overall = {r.arm: r.impressions for r in store.arm_sums("exp", 0, 10**7) if r.day is None}
    assert overall == {"control": 1, "treatment": 1}


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"request_id": "nope"}, "events[0].request_id", "unknown_request"),
        ({"app_id": "zzz"}, "events[0].app_id", "unknown_item"),
        ({"app_id": "a"}, "events[0].app_id", "unknown_item"),  # scored, but not among the top 2 returned
        ({"user_id": "u2"}, "events[0].user_id", "user_mismatch"),
        ({"ts": 1_000.0}, "events[0].ts", "ts_before_served"),
        ({"ts": time.time() + 3 * DAY}, "events[0].ts", "ts_in_future"),
    ],
)
def test_events_that_do_not_match_a_served_list_are_refused(
    store: SqlEventStore, changes: dict[str, object], field: str, code: str
) -> None:
    store.write_served([served_list("r1", app_ids=("a", "b", "c"), top_k=2)])
    fields = {"app_id": "b", **changes}
    (outcome,) = store.record_events([[event_in(0, **fields)]], time.time())  # type: ignore[arg-type]
    assert outcome.accepted == 0 and outcome.duplicates == 0
    (rejection,) = outcome.rejected
    assert (rejection.field, rejection.code, rejection.event_id) == (field, code, "e0")
    with store.db.read() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {store.prefix}events")
        assert cursor.fetchone()[0] == 0


def test_per_user_day_counts_agree_with_the_events(store: SqlEventStore) -> None:
    rng = np.random.default_rng(7)
    start = (time.time() // DAY - 3) * DAY
    served: list[ServedList] = []
    batch: list[EventIn] = []
    expected: dict[tuple[str, str, int], list[int]] = {}
    for r in range(40):
        user, arm, ts = f"u{r % 7}", "control" if r % 7 < 4 else "treatment", start + (r % 3) * DAY + 3600
        served.append(served_list(f"r{r}", user_id=user, arm=arm, ts=ts))
        for app in ("a", "b", "c")[: 1 + r % 3]:
            downloaded = bool(rng.random() < 0.4)
            batch.append(event_in(len(batch), request_id=f"r{r}", app_id=app, user_id=user, ts=ts + 5))
            if downloaded:
                batch.append(event_in(len(batch), "download", f"r{r}", app, user_id=user, ts=ts + 9))
            key = (arm, user, int((ts + 5) // DAY))
            counts = expected.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += int(downloaded)
    store.write_served(served)
    store.record_events([batch[: len(batch) // 2], batch[len(batch) // 2 :]], time.time())
    rows = store.arm_sums("exp", 0, 10**7)
    assert _by_key(rows) == _sums_from(expected)
    store.rebuild_user_days()
    assert _by_key(store.arm_sums("exp", 0, 10**7)) == _by_key(rows)
    one_day = int(start // DAY) + 1
    assert {r.day for r in store.arm_sums("exp", one_day, one_day)} == {None, one_day}


def _by_key(rows: list[ArmDaySums]) -> dict[tuple[str, int | None], tuple[float, ...]]:
    return {(r.arm, r.day): (r.users, r.impressions, r.downloads, r.sum_ii, r.sum_dd, r.sum_id) for r in rows}


def _sums_from(
    counts: dict[tuple[str, str, int], list[int]],
) -> dict[tuple[str, int | None], tuple[float, ...]]:
    """Independent per-arm sums: per day from the user-day counts, overall from per-user totals."""
    per_user: dict[tuple[str, str], list[int]] = {}
    groups: dict[tuple[str, int | None], list[tuple[int, int]]] = {}
    for (arm, user, day), (i, d) in counts.items():
        groups.setdefault((arm, day), []).append((i, d))
        total = per_user.setdefault((arm, user), [0, 0])
        total[0] += i
        total[1] += d
    for (arm, _), (i, d) in per_user.items():
        groups.setdefault((arm, None), []).append((i, d))
    result: dict[tuple[str, int | None], tuple[float, ...]] = {}
    for key, pairs in groups.items():
        i, d = np.array(pairs, dtype=float).T
        result[key] = (len(pairs), i.sum(), d.sum(), (i * i).sum(), (d * d).sum(), (i * d).sum())
    return result


def test_labeled_rows_join_impressions_with_downloads_page_by_page(store: SqlEventStore) -> None:
    store.page_size = 2  # several keyset pages
    now = time.time()
    store.write_served([served_list("r1"), served_list("r2", app_ids=("d", "e"))])
    events = [
        event_in(i, request_id=r, app_id=a, ts=now - 100 + i)
        for i, (r, a) in enumerate([("r1", "a"), ("r1", "b"), ("r1", "c"), ("r2", "d"), ("r2", "e")])
    ]
    events += [event_in(10, "download", "r1", "b"), event_in(11, "download", "r2", "e")]
    store.record_events([events], now)
    rows = list(store.labeled_rows("exp", 0, now + 10))
    assert [(r.request_id, r.app_id, r.label) for r in rows] == [
        ("r1", "a", 0), ("r1", "b", 1), ("r1", "c", 0), ("r2", "d", 0), ("r2", "e", 1),
    ]  # fmt: skip
    assert rows[1].item == {"category": "cat1", "rating": 4.1} and rows[1].position == 2
    assert rows[0].user["installed"] == ["x", "y"] and rows[0].context == {"country": "Spain", "hour": 9}
    assert list(store.labeled_rows("other", 0, now + 10)) == []
    assert store.served_models("exp", 0, now + 10) == [("lr", "20260101.000000")]


def test_purge_removes_whole_days_older_than_the_retention(store: SqlEventStore) -> None:
    now = (time.time() // DAY) * DAY + 12 * 3600  # noon today
    old, new = now - 10 * DAY, now - 1 * DAY
    store.write_served([served_list("old", ts=old), served_list("new", ts=new)])
    store.record_events(
        [[event_in(1, request_id="old", ts=old + 1), event_in(2, request_id="new", ts=new + 1)]], now
    )
    counts = store.purge(older_than_days=5, now=now)
    assert (counts.served_lists, counts.served_items, counts.events, counts.user_days) == (1, 3, 1, 1)
    assert [r.request_id for r in store.labeled_rows("exp", 0, now)] == ["new"]
    assert {r.day for r in store.arm_sums("exp", 0, 10**7)} == {None, int(new // DAY)}
    with pytest.raises(ValueError, match="older_than_days"):
        store.purge(-1)


def test_bulk_load_then_rebuild_gives_the_same_aggregates(store: SqlEventStore) -> None:
    now = time.time()
    store.write_served([served_list("r1")])
    store.record_events([[event_in(1), event_in(2, "download")]], now)
    checked = store.arm_sums("exp", 0, 10**7)
    day = int(now // DAY)
    rows = [("b1", "impression", "r9", "a", "u9", now, day, now, "exp", "treatment")]
    store.insert_events_unchecked(rows)
    store.rebuild_user_days()
    after = _by_key(store.arm_sums("exp", 0, 10**7))
    assert {k: v for k, v in after.items() if k[0] == "control"} == _by_key(checked)
    assert after[("treatment", None)] == (1, 1, 0, 1.0, 0.0, 0.0)
