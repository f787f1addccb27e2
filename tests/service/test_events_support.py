"""Shared fixtures and builders of the event-log tests (no tests here; the other modules import it).

Every store test runs on SQLite (a file in tmp_path) and on the real PostgreSQL of ``postgres_url``. On
PostgreSQL one schema is created per test session (``apprank_test_<random>``, selected through
``options=-csearch_path=...`` in the URL) and dropped at the end, and each test gets its own table
prefix, so parallel runs and tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.db import Database
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.models import EventIn
from service.events.store import SqlEventStore, open_event_store
from service.rank.served import ServedList

_PREFIXES = itertools.count()


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's event log lives: a database URL and a table prefix."""

    dialect: str
    url: str
    prefix: str


@pytest.fixture(scope="session")
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """``postgres_url`` with its search_path set to a fresh schema, dropped after the session."""
    import psycopg

    schema = f"apprank_test_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """One test's database: SQLite in tmp_path, or PostgreSQL with a table prefix of its own."""
    prefix = f"t{next(_PREFIXES)}_{secrets.token_hex(2)}_"
    if request.param == "sqlite":
        return StoreTarget("sqlite", f"sqlite:///{tmp_path / 'events.db'}", prefix)
    url: str = request.getfixturevalue("pg_schema_url")
    return StoreTarget("postgresql", url, prefix)


@pytest.fixture
def store(target: StoreTarget) -> Iterator[SqlEventStore]:
    """A migrated event store on the test's database."""
    db = Database(target.url)
    event_store = open_event_store(db, target.prefix)
    event_store.migrate()
    yield event_store
    db.close()


@pytest.fixture
def event_log(target: StoreTarget) -> Iterator[EventLog]:
    """A started event log (short grace for unknown requests, in-memory counters)."""
    config = EventLogConfig(unknown_request_grace_s=0.0, max_events_per_batch=50)
    log = EventLog.open(target.url, config, counters=EventCounters(), prefix=target.prefix)
    log.start()
    yield log
    log.close()


def served_list(
    request_id: str,
    user_id: str = "u1",
    app_ids: Sequence[str] = ("a", "b", "c"),
    *,
    arm: str = "control",
    experiment: str = "exp",
    ts: float | None = None,
    top_k: int | None = None,
    model: str = "lr",
) -> ServedList:
    """A served list over ``app_ids``, ranked by descending CTR (the first app scores lowest)."""
    n = len(app_ids)
    ctr = np.linspace(0.1, 0.1 + 0.01 * (n - 1), n).astype(np.float32)
    order = np.argsort(-ctr, kind="stable")[: top_k or n].astype(np.int64)
    features: list[dict[str, Any]] = [
        {"category": f"cat{i % 2}", "rating": 4.0 + i / 10} for i in range(len(app_ids))
    ]
    return ServedList(
        request_id=request_id,
        ts=time.time() if ts is None else ts,
        experiment=experiment,
        arm=arm,
        bucket=42,
        model=model,
        version="20260101.000000",
        objective="ctr",
        user_id=user_id,
        user={"user_id": user_id, "installed": ["x", "y"]},
        context={"country": "Spain", "hour": 9},
        app_ids=list(app_ids),
        bids=1.0 + np.arange(len(app_ids), dtype=np.float64),
        features=features,
        order=order,
        ctr=ctr,
    )


def event(
    index: int, kind: str = "impression", request_id: str = "r1", app_id: str = "a", **extra: Any
) -> dict[str, Any]:
    """A POST /events event object; ``event_id`` is ``e<index>`` unless given."""
    body: dict[str, Any] = {
        "event_id": f"e{index}",
        "type": kind,
        "request_id": request_id,
        "app_id": app_id,
        "user_id": "u1",
    }
    body.update(extra)
    return body


def event_in(
    index: int, kind: str = "impression", request_id: str = "r1", app_id: str = "a", **extra: Any
) -> EventIn:
    """The parsed form of ``event(...)``, for store-level tests."""
    fields = event(index, kind, request_id, app_id, **extra)
    return EventIn(
        index=index,
        event_id=fields["event_id"],
        type=fields["type"],
        request_id=fields["request_id"],
        app_id=fields["app_id"],
        user_id=fields["user_id"],
        ts=fields.get("ts"),
    )
