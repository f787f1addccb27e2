"""The event log: served lists and impression/download events, durable, in SQLite or PostgreSQL.

``service.app.create_app`` builds it (``EventLog.open``) when ``APPRANK_EVENT_LOG`` is on, hands its writer
to /rank as the served-list sink, mounts ``events_router`` and the report routes, and starts and closes
it in the app's lifespan. By hand: ``event_log.start()`` at startup (tables, the served-list writer
process and its supervisor, committer and maintenance threads) and ``event_log.close()`` at shutdown
(writes every accepted served list, commits every queued batch).

Served lists: /rank encodes a record (``record``) into a byte ring (``ring``) that a writer process
(``served_writer``, supervised by ``process_writer.ProcessWriter``) stores; ``writer.ServedListWriter``
is the in-process alternative (``EventLogConfig.writer = "thread"``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.events.counters import EventCounters
    from service.events.log import EventLog, EventLogConfig
    from service.events.process_writer import ProcessWriter
    from service.events.routes import events_router
    from service.events.store import (
        EventStore,
        PostgresEventStore,
        SqlEventStore,
        SQLiteEventStore,
        open_event_store,
    )
    from service.events.writer import ServedListWriter

# Names load on first use (PEP 562): the writer process imports ``service.events.served_writer``
# without the routes, the committer and FastAPI's models, which would double its start-up time.
_HOMES = {
    "EventCounters": "counters",
    "EventLog": "log",
    "EventLogConfig": "log",
    "ProcessWriter": "process_writer",
    "events_router": "routes",
    "EventStore": "store",
    "PostgresEventStore": "store",
    "SqlEventStore": "store",
    "SQLiteEventStore": "store",
    "open_event_store": "store",
    "ServedListWriter": "writer",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "EventCounters",
    "EventLog",
    "EventLogConfig",
    "EventStore",
    "PostgresEventStore",
    "ProcessWriter",
    "SQLiteEventStore",
    "ServedListWriter",
    "SqlEventStore",
    "events_router",
    "open_event_store",
]
