"""The uvicorn factory the live Prometheus test serves: the real app with the real event log.

``service.app.app_from_env`` is used as is once it mounts ``POST /events`` itself; until then the event
log is attached here exactly as ``service.events.wiring`` documents.
"""

from __future__ import annotations

from fastapi import FastAPI

from service.app import app_from_env, create_app
from service.events.log import EventLog
from service.events.wiring import attach_event_log
from service.settings import ServiceSettings


def create() -> FastAPI:
    app = app_from_env()
    if any(getattr(route, "path", None) == "/events" for route in app.routes):
        return app
    settings = ServiceSettings()
    event_log = EventLog.open(settings.database_url)
    app = create_app(settings, sink=event_log.sink)
    attach_event_log(app, event_log)
    return app
