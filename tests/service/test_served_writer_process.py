"""The served-list writer process: records round-trip into the report and the export exactly as the
in-process writer stores them, item features are stored once per version, the ring's byte bound drops
and counts, and a killed writer is restarted without losing an acknowledged event."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.db import Database
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.process_writer import ProcessWriter
from service.events.record import RecordEncoder, decode_record
from service.events.schema import migrations
from service.events.store import SqlEventStore, open_event_store
from service.rank.served import LoggedFields, ServedList
from service.settings import ServiceSettings
from tests.conftest import wait_until
from tests.service.conftest import rank_body
from tests.service.test_events_support import StoreTarget, event, event_in, served_list
from tests.service.test_harden_store import app_for

pytest_plugins = ["tests.service.test_events_support"]
FIELDS = LoggedFields(frozenset({"user_id"}), frozenset({"country"}), frozenset({"category", "rating"}))


@contextmanager
def opened(target: StoreTarget, prefix: str, **config: Any) -> Iterator[EventLog]:
    log = EventLog.open(target.url, EventLogConfig(**config), counters=EventCounters(), prefix=prefix)
    log.start()
    try:
        yield log
    finally:
        log.close()


def traffic(lists: int = 40) -> list[ServedList]:
    """Lists over 6 apps (top 3 returned, some without bids), a few with keys outside ``FIELDS``."""
    served = []
    for r in range(lists):
        base = served_list(f"r{r}", f"u{r % 7}", [f"app{(r + k) % 6}" for k in range(5)], top_k=3)
        features = [dict(f, junk=r) if r % 5 == 0 else f for f in base.features]
        assert base.bids is not None
        bids = None if r % 3 == 0 else np.where(np.arange(5) == 1, np.nan, base.bids)
        served.append(
            dataclasses.replace(base, features=features, bids=bids, fields=FIELDS, ts=time.time() - 100 + r)
        )
    return served


def with_feature(served: ServedList, name: str, value: Any) -> ServedList:
    """``served`` with ``name: value`` in its first candidate's features."""
    first = {**served.features[0], name: value}
    return dataclasses.replace(served, features=[first, *served.features[1:]])


def impressions(served: list[ServedList]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for s in served:
        for k, index in enumerate(s.order.tolist()):
            kind = "download" if k == 0 and int(s.request_id[1:]) % 2 else "impression"
            events.append(event(len(events), "impression", s.request_id, s.app_ids[index], user_id=s.user_id))
            if kind == "download":
                events.append(event(len(events), kind, s.request_id, s.app_ids[index], user_id=s.user_id))
    return events


def expected_rows(served: list[ServedList]) -> dict[tuple[str, str], tuple[Any, ...]]:
    """What today's writer logged of each returned item: schema fields only, float32 CTRs widened."""
    rows = {}
    for s in served:
        for position, index in enumerate(s.order.tolist(), start=1):
            bid = None if s.bids is None or math.isnan(s.bids[index]) else float(s.bids[index])
            item = {k: v for k, v in s.features[index].items() if k in FIELDS.item}
            user = {k: v for k, v in s.user.items() if k in FIELDS.user}
            rows[(s.request_id, s.app_ids[index])] = (position, float(s.ctr[index]), bid, item, user)
    return rows


def stored(log: EventLog) -> tuple[list[Any], list[Any], dict[tuple[str, str], tuple[Any, ...]]]:
    store = log.store
    rows = list(store.labeled_rows("exp", 0.0, time.time() + 60))
    labeled = {(r.request_id, r.app_id): (r.position, r.ctr, r.bid, dict(r.item), dict(r.user)) for r in rows}
    sums = store.arm_sums("exp", 0, 10**6)
    return sorted(sums, key=lambda s: (s.arm, s.day or -1)), [(r.event_id, r.label) for r in rows], labeled


def test_the_record_round_trips_into_the_report_and_the_export_as_the_thread_writer_stores_it(
    target: StoreTarget,
) -> None:
    served = traffic()
    results = []
    for writer in ("process", "thread"):
        with opened(target, f"{target.prefix}{writer[0]}", writer=writer, unknown_request_grace_s=0.0) as log:
            for s in served:
                log.sink.submit(s)
            with TestClient(app_for(log)) as client:
                response = client.post("/events", json={"events": impressions(served)})
                assert response.status_code == 200 and response.json()["rejected"] == [], response.text
            results.append(stored(log))
    assert results[0] == results[1]
    assert results[0][2] == expected_rows(served)
    assert sum(label for _, label in results[0][1]) == 20


def test_item_features_are_stored_once_per_app_and_version(store: SqlEventStore) -> None:
    lists = [served_list(f"r{r}", app_ids=("a", "b", "c")) for r in range(30)]
    changed = with_feature(served_list("new", app_ids=("a", "b", "c")), "rating", 1.5)  # app a: a new version
    assert store.write_served([*lists[:10], changed]) == 33
    assert store.write_served(lists[10:]) == 60
    with store.db.read() as cursor:
        cursor.execute(f"SELECT app_id, features_json FROM {store.prefix}item_features ORDER BY app_id")
        versions = cursor.fetchall()
        cursor.execute(f"SELECT COUNT(DISTINCT feature_id), COUNT(*) FROM {store.prefix}served_items")
        assert tuple(cursor.fetchone()) == (4, 93)
    assert [app for app, _ in versions] == ["a", "a", "b", "c"]
    events = [event_in(k, request_id=rid, app_id="a") for k, rid in enumerate(("r0", "new"))]
    store.record_events([events], time.time())
    items = {r.request_id: dict(r.item) for r in store.labeled_rows("exp", 0.0, time.time() + 60)}
    assert items == {"r0": {"category": "cat0", "rating": 4.0}, "new": {"category": "cat0", "rating": 1.5}}


def test_the_purge_keeps_versions_still_referred_to(store: SqlEventStore) -> None:
    old, new = time.time() - 10 * 86400, time.time()
    store.write_served(
        [served_list("old", app_ids=("a", "z"), ts=old), served_list("new", app_ids=("a",), ts=new)]
    )
    counts = store.purge(3)
    assert (counts.served_lists, counts.served_items, counts.item_features) == (1, 2, 1)
    with store.db.read() as cursor:
        cursor.execute(f"SELECT app_id FROM {store.prefix}item_features")
        assert [row[0] for row in cursor.fetchall()] == ["a"]


def test_migration_4_moves_stored_features_into_versions(target: StoreTarget) -> None:
    db = Database(target.url)
    try:
        db.migrate(migrations(target.prefix)[:3])
        p = target.prefix
        with db.transaction() as cursor:
            cursor.execute(
                db.sql(
                    f"INSERT INTO {p}served_lists VALUES "
                    "('r1', ?, 'exp', 'control', 1, 'lr', 'v', 'ctr', 'u1', '{}', '{}')"
                ),
                (time.time() - 60,),
            )
            for position, (app, features) in enumerate([("a", '{"x":1}'), ("b", '{"x":2}')], start=1):
                cursor.execute(
                    db.sql(f"INSERT INTO {p}served_items VALUES ('r1', ?, ?, 0.5, NULL, ?)"),
                    (position, app, features),
                )
        store = open_event_store(db, p)
        store.migrate()
        store.write_served([served_list("r2", app_ids=("a",))])
        store.record_events(
            [[event_in(0, request_id="r1", app_id="b"), event_in(1, request_id="r2")]], time.time()
        )
        items = {
            (r.request_id, r.app_id): dict(r.item) for r in store.labeled_rows("exp", 0.0, time.time() + 60)
        }
        assert items == {("r1", "b"): {"x": 2}, ("r2", "a"): {"category": "cat0", "rating": 4.0}}
    finally:
        db.close()


def test_the_request_thread_encodes_only_the_returned_items() -> None:
    served = served_list("r1", app_ids=[f"a{i}" for i in range(100)], top_k=10)
    record = decode_record(RecordEncoder().encode(served))
    assert record.app_ids == [f"a{i}" for i in range(99, 89, -1)]
    assert np.frombuffer(record.ctr, np.float32).tolist() == served.ctr[served.order].tolist()
    assert len(record.features) == 10 and msgspec.msgpack.decode(record.features[0]) == served.features[99]


def test_a_full_ring_drops_and_counts_and_never_blocks(target: StoreTarget) -> None:
    with opened(target, target.prefix, served_log_bytes=8 * 1024, flush_interval_s=0.01) as log:
        writer = log.writer
        assert isinstance(writer, ProcessWriter) and writer.pid is not None
        assert writer.flush(30)  # the writer process is up
        os.kill(writer.pid, signal.SIGSTOP)  # a writer that cannot keep up at all
        try:
            started = time.monotonic()
            for r in range(200):
                writer.submit(served_list(f"r{r}"))
            submit_s = time.monotonic() - started
            kept = writer.queue_depth()
            assert 0 < kept < 200 and writer.refused == 200 - kept
            assert log.counters.snapshot()["served_lists_dropped"] == 200 - kept
        finally:
            os.kill(writer.pid, signal.SIGCONT)
        assert writer.flush(30) and writer.written == kept
        assert submit_s < 5.0  # a sanity bound only: a blocked submit would hang far longer
        with log.store.db.read() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {target.prefix}served_lists")
            assert cursor.fetchone()[0] == kept


def test_a_killed_writer_is_restarted_and_no_acknowledged_event_is_lost(target: StoreTarget) -> None:
    with opened(target, target.prefix, unknown_request_grace_s=0.0, flush_interval_s=0.01) as log:
        writer = log.writer
        assert isinstance(writer, ProcessWriter)
        submitted, acknowledged, stop = [0], [0], threading.Event()

        def serve() -> None:
            while not stop.is_set():
                writer.submit(served_list(f"s{submitted[0]}", app_ids=("a", "b")))
                submitted[0] += 1
                time.sleep(0.0005)

        with TestClient(app_for(log)) as client:
            log.sink.submit(served_list("before"))
            assert writer.flush(30)
            first_pid = writer.pid
            assert first_pid is not None
            thread = threading.Thread(target=serve)
            thread.start()
            try:
                wait_until(lambda: writer.written >= 50, 30, "lists written under load")
                os.kill(first_pid, signal.SIGKILL)
                for k in range(20):  # events on a stored list: acknowledged whatever the writer does
                    body = {"events": [event(k, request_id="before", app_id="abc"[k % 3], event_id=f"k{k}")]}
                    response = client.post("/events", json=body)
                    assert response.status_code == 200, response.text
                    acknowledged[0] += response.json()["accepted"] + response.json()["duplicates"]
                wait_until(lambda: writer.restarts >= 1 and writer.pid != first_pid, 30, "a new writer")
                resumed_from = writer.written
                wait_until(lambda: writer.written >= resumed_from + 50, 30, "lists written again")
            finally:
                stop.set()
                thread.join()
            assert writer.flush(30)
        assert log.counters.snapshot()["served_writer_restarts"] == writer.restarts >= 1
        with log.store.db.read() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {target.prefix}served_lists WHERE request_id LIKE 's%'")
            lists = cursor.fetchone()[0]
            cursor.execute(f"SELECT COUNT(*) FROM {target.prefix}events WHERE request_id = 'before'")
            events = cursor.fetchone()[0]
        assert lists + writer.dropped == submitted[0]
        assert log.counters.snapshot()["served_lists_dropped"] == writer.dropped
        assert events == 3 and acknowledged[0] == 20  # 3 distinct (item, type) pairs, the rest duplicates


@pytest.fixture
def settings(settings: ServiceSettings) -> ServiceSettings:
    """The shared app settings with the served-list writer process (the default), which this file tests."""
    return settings.model_copy(update={"event_writer": "process"})


def test_rank_keeps_answering_while_its_writer_process_is_killed(client: TestClient) -> None:
    log = client.app.state.service.event_log  # type: ignore[attr-defined]
    writer = log.writer
    assert isinstance(writer, ProcessWriter)
    statuses: list[int] = []

    def rank(times: int) -> None:
        statuses.extend(client.post("/rank", json=rank_body(20)).status_code for _ in range(times))

    rank(5)
    assert writer.flush(30) and writer.written == 5
    first_pid = writer.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    rank(30)
    wait_until(lambda: writer.restarts == 1 and writer.pid != first_pid, 30, "a new writer")
    rank(5)
    assert writer.flush(30)
    assert statuses == [200] * 40
    assert writer.written + writer.dropped >= 40  # lists the killed writer held are written again
    with log.store.db.read() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {log.store.prefix}served_lists")
        assert cursor.fetchone()[0] + writer.dropped == 40


WORKER = """
import sys, time
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from tests.service.test_events_support import served_list
log = EventLog.open(sys.argv[1], EventLogConfig(flush_interval_s=30.0), counters=EventCounters())
log.start()
for r in range(50):
    log.sink.submit(served_list(f"r{r}"))
print(log.writer._ring.path, flush=True)
time.sleep(600)
"""


def test_the_writer_of_a_killed_worker_stores_what_it_holds_and_removes_its_ring(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        ring = Path(worker.stdout.readline().strip())
        assert ring.exists()
    finally:
        worker.kill()  # no close(): the writer learns it from its stdin
        worker.wait()
    wait_until(lambda: not ring.exists(), 30, "the orphaned writer done")
    db = Database(url)
    try:
        with db.read() as cursor:
            cursor.execute("SELECT COUNT(*) FROM apprank_served_lists")
            assert cursor.fetchone()[0] == 50
    finally:
        db.close()


def test_a_list_the_store_cannot_hold_is_dropped_alone(target: StoreTarget) -> None:
    with opened(target, target.prefix) as log:
        bad = with_feature(served_list("bad"), "blob", b"\x00\x01")  # a msgpack body may carry bytes: no JSON
        for served in (served_list("good1"), bad, served_list("good2")):
            log.sink.submit(served)
        assert log.writer.flush(30)
        assert (log.writer.written, log.writer.dropped) == (2, 1)
        assert log.counters.snapshot()["served_lists_dropped"] == 1
        with log.store.db.read() as cursor:
            cursor.execute(f"SELECT request_id FROM {target.prefix}served_lists ORDER BY request_id")
            assert [row[0] for row in cursor.fetchall()] == ["good1", "good2"]


def test_the_ring_wraps_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    from service.events.ring import ByteRing, Slot

    ring = ByteRing.create(tmp_path / "ring", 100)
    try:
        seen: list[bytes] = []
        for k in range(40):  # 40 records of 20-29 bytes through 100 bytes: the ring wraps many times
            record = bytes([k]) * (16 + k % 10)
            if ring.append(record) < 0:
                payloads, ends = ring.read(100)
                seen.extend(payloads)
                ring.consume(ends[-1], len(payloads))
                assert ring.append(record) > 0
        payloads, ends = ring.read(100)
        seen.extend(payloads)
        assert seen == [bytes([k]) * (16 + k % 10) for k in range(40)]
        assert ring.append(b"x" * 97) == -1  # 4 + 97 bytes can never fit in 100
        assert ring.get(Slot.RECORDS_IN) - ring.get(Slot.RECORDS_OUT) == len(payloads)
    finally:
        ring.close()
