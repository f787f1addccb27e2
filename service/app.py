"""The FastAPI application: ``create_app(settings)`` builds it; the lifespan loads models and stores.

Nothing happens at import time. ``app_from_env`` is the factory uvicorn workers call
(``uvicorn --factory service.app:app_from_env``), reading settings from ``APPRANK_*`` variables.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from service.api_models import rank_request_doc
from service.auth import AdminTokens, AuthError
from service.console import mount_console
from service.db import Database
from service.errors import RequestError, UnavailableError
from service.experiments.admin import ExperimentAdmin
from service.experiments.models import ExperimentSpec
from service.experiments.router import Router
from service.experiments.routes import router as experiments_router
from service.experiments.store import ExperimentStore
from service.experiments.sync import StoreSync
from service.health import router as health_router
from service.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.rank.model_routes import router as models_router
from service.rank.rank_service import RankService
from service.rank.registry import LoadOptions, ModelRegistry
from service.rank.routes import rank_route, rank_router
from service.rank.served import NullSink, ServedListSink
from service.settings import ServiceSettings
from service.state import ServiceState

log = logging.getLogger(__name__)
BOOTSTRAP_ACTOR = "bootstrap"


def build_state(settings: ServiceSettings, sink: ServedListSink) -> ServiceState:
    """Open the store, load the bundles, seed experiments and wire the plain classes together."""
    tokens = AdminTokens.parse(settings.admin_token.get_secret_value() if settings.admin_token else None)
    db = Database(settings.database_url)
    store = ExperimentStore(db, settings.table_prefix)
    store.migrate()
    options = LoadOptions(
        settings.ort_device,
        settings.ort_intra_op_threads,
        settings.ort_inter_op_threads,
        settings.item_cache_size,
    )
    registry = ModelRegistry(settings.models_dir, options)
    router = Router(settings.default_experiment)
    sync = StoreSync(store, router, registry, settings.sync_interval_s)
    sync.refresh_experiments()
    report = sync.reload_models()
    log.info("models: loaded %s, refused %s", report.loaded, report.refused)
    admin = ExperimentAdmin(store, registry, sync)
    if settings.experiments_file is not None:
        _seed_experiments(settings, store, admin)
    ranking = RankService(registry, router, sink, settings.max_candidates, settings.default_model)
    return ServiceState(settings, db, store, registry, router, sync, ranking, admin, tokens)


def _seed_experiments(settings: ServiceSettings, store: ExperimentStore, admin: ExperimentAdmin) -> None:
    """Create the experiments of ``experiments_file`` that the store does not have yet."""
    assert settings.experiments_file is not None
    entries: list[dict[str, Any]] = json.loads(settings.experiments_file.read_text())
    for entry in entries:
        name = str(entry.pop("name"))
        if store.get(name) is None:
            admin.put(name, ExperimentSpec.model_validate(entry), BOOTSTRAP_ACTOR)
            log.info("created experiment %s from %s", name, settings.experiments_file)


def create_app(settings: ServiceSettings | None = None, *, sink: ServedListSink | None = None) -> FastAPI:
    """The ranking service. ``sink`` receives every served list (default: discarded)."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await asyncio.to_thread(build_state, settings, sink or NullSink())
        app.state.service = state
        state.sync.start()
        # Everything built so far lives as long as the app: keep it out of the cyclic collector's full
        # passes, which otherwise walk every loaded object and show up as /rank latency spikes.
        gc.collect()
        gc.freeze()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.gil_switch_interval_s)
        try:
            yield
        finally:
            gc.unfreeze()
            sys.setswitchinterval(switch_interval)
            state.sync.stop()
            state.db.close()

    app = FastAPI(title="apprank", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    request_doc = rank_request_doc(settings.max_candidates)
    _document_models(app, request_doc.pop("$defs", {}))
    app.router.routes.append(rank_route())  # answers POST /rank; the next one only documents it
    app.include_router(rank_router(request_doc))
    app.include_router(models_router)
    app.include_router(experiments_router)
    app.include_router(health_router)
    mount_console(app)
    _add_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    return app


def _document_models(app: FastAPI, definitions: dict[str, Any]) -> None:
    """Add the /rank body's nested models (documented by hand, not by FastAPI) to the components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_handlers(app: FastAPI) -> None:
    async def request_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestError)
        return Response(error.body(), status_code=error.status, media_type="application/json")

    async def unavailable(_: Request, error: Exception) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=503)

    async def auth_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, AuthError)
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"detail": error.message}, status_code=error.status, headers=headers)

    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(UnavailableError, unavailable)
    app.add_exception_handler(AuthError, auth_error)


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings from the environment, with the event log attached.

    The event log (``service.events``) receives every served list and serves ``POST /events`` and
    the experiment report; ``APPRANK_EVENT_LOG=false`` leaves it out.
    """
    settings = ServiceSettings()
    if not settings.event_log:
        return create_app(settings)
    from service.events import EventLog
    from service.events.log import EventLogConfig
    from service.events.wiring import attach_event_log

    config = EventLogConfig(
        retention_days=settings.event_retention_days, clock_skew_s=settings.event_clock_skew_s
    )
    event_log = EventLog.open(settings.database_url, config, prefix=settings.table_prefix)
    app = create_app(settings, sink=event_log.sink)
    attach_event_log(app, event_log)
    return app
