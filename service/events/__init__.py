"""The event log: served lists and impression/download events, durable, in SQLite or PostgreSQL.

Wiring (``service.app.app_from_env`` does this; ``attach_event_log`` is in ``service.events.wiring``,
not re-exported here, because it imports ``service.report``, which imports this package)::

    event_log = EventLog.open(settings.database_url, prefix=settings.table_prefix)
    app = create_app(settings, sink=event_log.sink)  # /rank submits every served list to the writer
    attach_event_log(app, event_log)  # POST /events and the report routes; start/close in the lifespan

By hand: ``event_log.start()`` at startup (tables, writer, committer and maintenance threads),
``app.state.event_log = event_log`` (read by ``events_router()`` and ``report_router()``), and
``event_log.close()`` at shutdown (writes every queued served list, commits every queued batch).
"""

from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.routes import events_router, get_event_log
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
    "SQLiteEventStore",
    "ServedListWriter",
    "SqlEventStore",
    "events_router",
    "get_event_log",
    "open_event_store",
]
