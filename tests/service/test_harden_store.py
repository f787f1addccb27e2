"""Issue 16, the store's half, in-process: readiness that proves a write (case 11), event_id conflicts
(case 8), stale pooled PostgreSQL connections (case 4). Real SQLite files, the real PostgreSQL, the
real app under Starlette's TestClient; the multi-worker cases are in ``test_harden_store_server.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import Database
from service.errors import add_error_handlers
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.routes import events_router
from service.events.store import open_event_store
from service.experiments.store import ExperimentStore
from service.settings import ServiceSettings
from tests.conftest import require, wait_until
from tests.service.conftest import ADMIN, fifty_fifty
from tests.service.test_events_support import StoreTarget, event, served_list

pytest_plugins = ["tests.service.test_events_support"]


def immutable(paths: list[Path], on: bool) -> None:
    """``chattr +i`` / ``-i``: even root cannot write the files (chmod would not stop root)."""
    existing = [str(path) for path in paths if path.exists()]
    subprocess.run(["chattr", "+i" if on else "-i", *existing], check=True)


@pytest.fixture
def chattr() -> None:
    require(os.geteuid() == 0 and shutil.which("chattr") is not None, "root and chattr")


def test_readyz_refuses_while_the_sqlite_file_cannot_be_written(
    chattr: None, settings: ServiceSettings, tmp_path: Path
) -> None:
    """Case 11 (and 1 in one worker): /readyz proves a committed write; it recovers with the file."""
    files = [tmp_path / "apprank.db", tmp_path / "apprank.db-wal"]
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        immutable(files, True)
        try:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "the database cannot be written" in ready.json()["reasons"][0]
            put = client.put("/experiments/x", json=fifty_fifty(), headers=ADMIN)
            assert put.status_code == 503 and put.headers["retry-after"] == "1"
            assert put.json()["detail"][0]["type"] == "unavailable"
        finally:
            immutable(files, False)
        wait_until(lambda: client.get("/readyz").status_code == 200, 10, "ready once writable")
        assert client.put("/experiments/x", json=fifty_fifty(), headers=ADMIN).status_code == 201


def read_only_url(pg_schema_url: str) -> str:
    """The same database, every transaction of its sessions read-only (as on a hot standby)."""
    return pg_schema_url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20", 1)


def test_readyz_refuses_while_postgresql_refuses_writes(
    settings: ServiceSettings, pg_schema_url: str
) -> None:
    """Case 11 on PostgreSQL: reads work, writes do not; not ready, and a write is a 503, not a 500."""
    prefix = "ro_"
    writable = settings.model_copy(update={"database_url": pg_schema_url, "table_prefix": prefix})
    with TestClient(create_app(writable)) as client:  # creates the tables
        assert client.get("/readyz").status_code == 200
    read_only = writable.model_copy(update={"database_url": read_only_url(pg_schema_url)})
    with TestClient(create_app(read_only)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "ReadOnlySqlTransaction" in ready.json()["reasons"][0]
        assert client.get("/experiments").status_code == 200
        put = client.put("/experiments/x", json=fifty_fifty(), headers=ADMIN)
        assert put.status_code == 503 and put.headers["retry-after"] == "1"


def app_for(event_log: EventLog) -> FastAPI:
    app = FastAPI()
    add_error_handlers(app)
    app.include_router(events_router(lambda: event_log))
    return app


@pytest.fixture
def events_client(target: StoreTarget) -> Iterator[tuple[TestClient, EventLog]]:
    config = EventLogConfig(unknown_request_grace_s=0.0)
    log = EventLog.open(target.url, config, counters=EventCounters(), prefix=target.prefix)
    log.start()
    log.sink.submit(served_list("r1", app_ids=("a", "b", "c")))
    try:
        with TestClient(app_for(log)) as client:
            yield client, log
    finally:
        log.close()


def post(client: TestClient, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    response = client.post("/events", json={"events": events})
    return response.status_code, response.json()


def test_an_event_id_resent_with_other_content_is_a_conflict(
    events_client: tuple[TestClient, EventLog],
) -> None:
    """Case 8: same event_id, another type or app: refused (``event_id_conflict``), the stored one kept;
    the same content resent stays an idempotent duplicate."""
    client, log = events_client
    assert post(client, [event(1, app_id="b")]) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert post(client, [event(1, app_id="b", ts=None)])[1]["duplicates"] == 1
    for changed in (event(1, "download", app_id="b"), event(1, app_id="c")):
        status, body = post(client, [changed])
        assert status == 422
        [rejection] = body["rejected"]
        assert (rejection["field"], rejection["code"]) == ("events[0].event_id", "event_id_conflict")
        assert "already stored for another event (a impression of app 'b'" in rejection["reason"]
    status, body = post(client, [event(1, "download", app_id="b"), event(2, app_id="c")])
    assert status == 200 and (body["accepted"], body["duplicates"]) == (1, 0)
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(0, "event_id_conflict")]
    # within one batch: the second use of an id for other content is the conflict
    status, body = post(client, [event(3, app_id="a"), event(3, "download", app_id="a")])
    assert (body["accepted"], [r["code"] for r in body["rejected"]]) == (1, ["event_id_conflict"])
    overall = [r for r in log.store.arm_sums("exp", 0, 10**7) if r.day is None]
    assert [(r.impressions, r.downloads) for r in overall] == [(3, 0)]
    assert log.counters.snapshot()["events_rejected"] == {"event_id_conflict": 4}


def terminate_backends(url: str, prefix_marker: str) -> int:
    """``pg_terminate_backend`` on every other session of this database whose search_path is the test's."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        pid = connection.info.backend_pid
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> %s AND application_name = %s",
            (pid, prefix_marker),
        ).fetchall()
    return len(rows)


def test_stale_pooled_postgresql_connections_are_replaced(
    settings: ServiceSettings, pg_schema_url: str
) -> None:
    """Case 4: after ``pg_terminate_backend`` on the service's pooled connections, the admin, audit and
    report routes answer as before (never a 500)."""
    marker = f"apprank_h16_{os.getpid()}"
    url = f"{pg_schema_url}&application_name={marker}"
    service = settings.model_copy(update={"database_url": url, "table_prefix": "stale_"})
    with TestClient(create_app(service)) as client:
        assert client.put("/experiments/x", json=fifty_fifty(), headers=ADMIN).status_code == 201
        calls = [
            ("GET", "/experiments"),
            ("GET", "/experiments/x"),
            ("GET", "/experiments/x/audit"),
            ("GET", "/experiments/x/report"),
            ("PUT", "/experiments/x"),
        ]
        for _ in range(3):
            assert terminate_backends(pg_schema_url, marker) >= 1
            for method, path in calls:
                body = fifty_fifty() if method == "PUT" else None
                response = client.request(method, path, json=body, headers=ADMIN)
                assert response.status_code == 200, (method, path, response.text)


def test_migrations_write_nothing_once_applied(target: StoreTarget) -> None:
    """Case 1's precondition: a worker restarted while the database is unwritable can still start."""
    db = Database(target.url)
    try:
        open_event_store(db, target.prefix).migrate()
        ExperimentStore(db, target.prefix).migrate()
        if target.dialect == "sqlite":
            files = [Path(target.url.removeprefix("sqlite:///"))]
            files.append(files[0].with_name(files[0].name + "-wal"))
            require(os.geteuid() == 0 and shutil.which("chattr") is not None, "root and chattr")
            immutable(files, True)
            try:
                ExperimentStore(Database(target.url), target.prefix).migrate()  # a fresh connection
            finally:
                immutable(files, False)
        else:
            read_only = Database(read_only_url(target.url))
            try:
                ExperimentStore(read_only, target.prefix).migrate()
            finally:
                read_only.close()
    finally:
        db.close()
