"""Issue 16, the store's half: the served-list writer and the group committer under database faults
(case 3) and values the database refuses (case 2, second half). Real SQLite files (made immutable with
``chattr``) and the real PostgreSQL (a table lock held past the service's ``lock_timeout``)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.events.committer import GroupCommitter
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.writer import ServedListWriter
from service.rank.rank_service import new_request_id
from tests.conftest import require, wait_until
from tests.service.test_events_support import StoreTarget, event, event_in, served_list
from tests.service.test_harden_store import app_for, post

pytest_plugins = ["tests.service.test_events_support"]
BAD = "bad\x00user\ud800"  # NUL: PostgreSQL refuses it; a lone surrogate: both drivers refuse it


@contextmanager
def sqlite_unwritable(target: StoreTarget) -> Iterator[None]:
    """The database file and its WAL immutable (``chattr +i``: even root cannot write them)."""
    require(os.geteuid() == 0 and shutil.which("chattr") is not None, "root and chattr")
    db_file = Path(target.url.removeprefix("sqlite:///"))
    files = [str(path) for path in (db_file, db_file.with_name(db_file.name + "-wal")) if path.exists()]
    subprocess.run(["chattr", "+i", *files], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *files], check=True)


@contextmanager
def postgres_locked(target: StoreTarget) -> Iterator[None]:
    """Writes to the served lists locked out (reads allowed) by another session, beyond the service's
    ``lock_timeout``."""
    import psycopg

    with psycopg.connect(target.url) as connection:
        connection.execute(f"LOCK TABLE {target.prefix}served_lists IN EXCLUSIVE MODE")
        yield
        connection.rollback()


def unwritable(target: StoreTarget) -> Callable[[], Any]:
    """A context manager factory: the database cannot be written inside it."""
    if target.dialect == "sqlite":
        return lambda: sqlite_unwritable(target)
    return lambda: postgres_locked(target)


def service_url(target: StoreTarget) -> str:
    """The service's URL: on PostgreSQL with a short ``lock_timeout``, so a held lock is a failure."""
    if target.dialect == "sqlite":
        return target.url
    return target.url.replace("options=", "options=-clock_timeout%3D200%20", 1)


@pytest.fixture
def patient_log(target: StoreTarget) -> Iterator[EventLog]:
    config = EventLogConfig(unknown_request_grace_s=0.0, flush_interval_s=0.02)
    log = EventLog.open(service_url(target), config, counters=EventCounters(), prefix=target.prefix)
    log.start()
    yield log
    log.close()


def test_a_served_list_whose_write_fails_is_retried_and_its_events_wait(
    target: StoreTarget, patient_log: EventLog
) -> None:
    """Case 3: while the database cannot be written, the list stays queued (retried, counted), its
    events get a retryable 503 with Retry-After (never a final 422), and once the database is back the
    list is written and the same batch is accepted."""
    log = patient_log
    log.sink.submit(served_list("warmup"))
    assert log.writer.flush(5.0)
    request_id = new_request_id()
    with TestClient(app_for(log)) as client, unwritable(target)():
        log.sink.submit(served_list(request_id))
        wait_until(lambda: log.counters.snapshot()["served_list_retries"] >= 2, 10, "retried writes")
        response = client.post("/events", json={"events": [event(1, request_id=request_id, app_id="b")]})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        [issue] = response.json()["detail"]
        assert (issue["loc"], issue["type"]) == (["body", "events", 0, "request_id"], "retry_later")
        assert log.writer.is_pending([request_id]) and log.counters.snapshot()["served_lists_dropped"] == 0
    wait_until(lambda: not log.writer.is_pending([request_id]), 10, "the list written once writable")
    with TestClient(app_for(log)) as client:
        assert post(client, [event(1, request_id=request_id, app_id="b")])[1]["accepted"] == 1
    assert log.counters.snapshot()["served_lists_dropped"] == 0


def test_a_list_past_the_retry_horizon_is_dropped_and_counted(target: StoreTarget) -> None:
    """Case 3, the bound: a list still unwritten after the horizon is dropped (counted), and events
    naming it are then refused as ``unknown_request``."""
    config = EventLogConfig(unknown_request_grace_s=0.0, served_retry_horizon_s=0.5, pending_slack_s=0.0)
    log = EventLog.open(service_url(target), config, counters=EventCounters(), prefix=target.prefix)
    log.start()
    try:
        log.sink.submit(served_list("warmup"))
        assert log.writer.flush(5.0)
        request_id = new_request_id()
        with unwritable(target)():
            log.sink.submit(served_list(request_id))
            wait_until(lambda: log.counters.snapshot()["served_lists_dropped"] == 1, 10, "the list dropped")
        assert not log.writer.is_pending([request_id])
        with TestClient(app_for(log)) as client:
            status, body = post(client, [event(1, request_id=request_id, app_id="b")])
        assert status == 422 and body["rejected"][0]["code"] == "unknown_request"
    finally:
        log.close()


def test_one_unstorable_served_list_never_takes_its_batch_down(
    target: StoreTarget, patient_log: EventLog
) -> None:
    """Case 2 (second half), served lists: a batch holding one list the database refuses is written
    list by list; only that one is dropped (and counted)."""
    counters = EventCounters()
    writer = ServedListWriter(patient_log.store, counters)  # not started: close() writes one batch
    good = [served_list(f"g{i}", user_id=f"u{i}") for i in range(20)]
    for served in [*good[:10], dataclasses.replace(served_list("bad"), user_id=BAD), *good[10:]]:
        writer.submit(served)
    writer.close()
    assert (writer.written, writer.dropped, counters.snapshot()["served_lists_dropped"]) == (20, 1, 1)
    with TestClient(app_for(patient_log)) as client:
        status, body = post(client, [event(i, request_id=f"g{i}", user_id=f"u{i}") for i in range(20)])
    assert (status, body["accepted"]) == (200, 20)


def test_one_unstorable_event_never_fails_another_requests_events(
    target: StoreTarget, patient_log: EventLog
) -> None:
    """Case 2 (second half), events: one group commit holding an event the database refuses; every
    other request's batch is committed, and in the bad request's batch only that event is refused."""
    for r in range(5):
        patient_log.sink.submit(served_list(f"r{r}"))
    assert patient_log.writer.flush(5.0)
    committer = GroupCommitter(patient_log.store, None)
    jobs = [
        [event_in(10 * r + k, request_id=f"r{r}", app_id=app) for k, app in enumerate("ab")] for r in range(5)
    ]  # noqa: E501
    jobs[2].append(event_in(29, request_id="r2", app_id="c", event_id=BAD))
    futures = [committer.submit(job) for job in jobs]  # queued before the thread runs: one group
    committer.start()
    try:
        outcomes = [future.result(10.0) for future in futures]
    finally:
        committer.close()
    assert [outcome.accepted for outcome in outcomes] == [2, 2, 2, 2, 2]
    [refused] = outcomes[2].rejected
    assert (refused.index, refused.field, refused.code) == (29, "events[29]", "unstorable")
    overall = [r for r in patient_log.store.arm_sums("exp", 0, 10**7) if r.day is None]
    assert [r.impressions for r in overall] == [10]


def test_an_event_for_another_workers_unwritten_list_is_503_not_422(target: StoreTarget) -> None:
    """Case 3 across workers (which share no memory): worker B knows nothing of worker A's queue, but a
    request_id minted by /rank less than the retry horizon ago may still be written: 503, retryable."""
    slow = EventLogConfig(flush_interval_s=30.0)
    worker_a = EventLog.open(target.url, slow, counters=EventCounters(), prefix=target.prefix)
    quick = EventLogConfig(unknown_request_grace_s=0.0)
    worker_b = EventLog.open(target.url, quick, counters=EventCounters(), prefix=target.prefix)
    worker_a.start()
    worker_b.start()
    try:
        request_id = new_request_id()
        worker_a.sink.submit(served_list(request_id))
        with TestClient(app_for(worker_b)) as client:
            pending = client.post("/events", json={"events": [event(1, request_id=request_id, app_id="b")]})
            assert pending.status_code == 503 and pending.headers["retry-after"] == "1"
            assert pending.json()["detail"][0]["type"] == "retry_later"
            assert worker_a.writer.flush(5.0)
            assert post(client, [event(1, request_id=request_id, app_id="b")])[1]["accepted"] == 1
            old = f"{int((time.time() - 3600) * 1000):012x}" + "0" * 20  # minted an hour ago
            status, body = post(client, [event(2, request_id=old, app_id="b")])
            assert status == 422 and body["rejected"][0]["code"] == "unknown_request"
    finally:
        worker_a.close()
        worker_b.close()
