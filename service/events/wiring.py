"""Mounting the event log on the service's FastAPI app in one call.

``create_app`` builds the app with the event log's writer as its ``ServedListSink``; then
``attach_event_log`` adds ``POST /events`` and the report routes, and wraps the app's lifespan so the
event log starts before the service's own startup and closes (flushing everything) after its shutdown::

    event_log = EventLog.open(settings.database_url, prefix=settings.table_prefix)
    app = create_app(settings, sink=event_log.sink)
    attach_event_log(app, event_log)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.events.log import EventLog
from service.events.routes import events_router
from service.report.build import ExperimentArms
from service.report.routes import ExperimentLookup, lookup_from_store, report_router


def attach_event_log(app: FastAPI, event_log: EventLog, lookup: ExperimentLookup | None = None) -> None:
    """Add the event log's routes to ``app`` and tie its start and close to the app's lifespan.

    Args:
        app: the service app (its existing lifespan still runs, inside the event log's).
        event_log: stored in ``app.state.event_log``, where the routes find it.
        lookup: experiment definitions for the report; default: the service's experiment store
            (``app.state.service.store``, available once the service has started).
    """
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        await asyncio.to_thread(event_log.start)
        application.state.event_log = event_log
        try:
            async with inner(application) as state:
                yield state
        finally:
            await asyncio.to_thread(event_log.close)

    app.router.lifespan_context = lifespan
    app.include_router(events_router())
    app.include_router(report_router(lookup or _service_store_lookup(app)))


def _service_store_lookup(app: FastAPI) -> ExperimentLookup:
    """Experiments from the service's store, resolved at request time."""

    def lookup(name: str) -> ExperimentArms | None:
        service = getattr(app.state, "service", None)
        store = getattr(service, "store", None)
        return None if store is None else lookup_from_store(store)(name)

    return lookup
