"""The event log: served lists and impression/download events, durable, in SQLite or PostgreSQL.

Wiring (in the service's lifespan)::

    event_log = EventLog.open(settings.database_url)   # or EventLog(shared_database)
    event_log.start()                                   # tables, writer and committer threads
    app.state.event_log = event_log                     # read by events_router()
    ... hand event_log.sink to /rank as its ServedListSink ...
    app.include_router(events_router())
    ...
    event_log.close()                                   # at shutdown: flushes everything
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
