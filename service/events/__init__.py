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
