"""The composition root: ``create_app(settings)`` builds the whole service, the event log included.

Nothing happens at import time, and nothing is opened when the app is built: the lifespan opens the
stores, loads the bundles and starts the background threads (``build_state``, ``ServiceState.start``),
and closes them at shutdown. ``app_from_env`` is the factory uvicorn workers call
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
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from service.auth import AdminTokens
from service.console import mount_console
from service.db import Database
from service.errors import UnavailableError, add_error_handlers
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.routes import events_router
from service.experiments.admin import ExperimentAdmin
from service.experiments.models import ExperimentSpec, valid_name
from service.experiments.router import Router
from service.experiments.routes import router as experiments_router
from service.experiments.store import ExperimentStore
from service.experiments.sync import StoreSync
from service.health import router as health_router
from service.metrics import event_metrics
from service.middleware import BodyMiddleware, HeadMiddleware, MetricsMiddleware
from service.rank.model_admin import ModelAdmin
from service.rank.model_routes import router as models_router
from service.rank.rank_service import RankService
from service.rank.registry import LoadOptions, ModelRegistry
from service.rank.routes import document_rank, rank_route
from service.rank.served import NullSink, ServedListSink
from service.rank.version_routes import router as versions_router
from service.report.build import ExperimentArms
from service.report.routes import ExperimentLookup, lookup_from_store, report_router
from service.settings import ServiceSettings
from service.state import ServiceState, get_state

log = logging.getLogger(__name__)
BOOTSTRAP_ACTOR = "bootstrap"
JSON_BODIES = frozenset({"/rank", "/events"})  # 415 for another Content-Type
MSGPACK_BODIES = frozenset({"/rank"})  # application/msgpack too


def build_state(settings: ServiceSettings) -> ServiceState:
    """Open the stores, load the bundles, seed experiments and wire the plain classes together."""
    tokens = AdminTokens.parse(settings.admin_token.get_secret_value() if settings.admin_token else None)
    event_log = open_event_log(settings) if settings.event_log else None
    sink: ServedListSink = NullSink() if event_log is None else event_log.sink
    db = Database(settings.database_url)
    store = ExperimentStore(db, settings.table_prefix)
    store.migrate()
    ModelAdmin(settings.models_dir, db, settings.table_prefix).migrate()
    options = LoadOptions(
        settings.ort_device,
        settings.ort_intra_op_threads,
        settings.ort_inter_op_threads,
        settings.item_cache_size,
        settings.request_graph,
        settings.int8,
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
    return ServiceState(settings, db, store, registry, router, sync, ranking, admin, tokens, event_log)


def open_event_log(settings: ServiceSettings) -> EventLog:
    """The event log of these settings, on its own database connection(s), updating the service's metrics."""
    config = EventLogConfig(
        writer=settings.event_writer,
        served_log_bytes=settings.event_log_bytes,
        retention_days=settings.event_retention_days,
        clock_skew_s=settings.event_clock_skew_s,
    )
    counters = EventCounters(event_metrics())
    return EventLog.open(settings.database_url, config, counters=counters, prefix=settings.table_prefix)


def _seed_experiments(settings: ServiceSettings, store: ExperimentStore, admin: ExperimentAdmin) -> None:
    """Create the experiments of ``experiments_file`` that the store does not have yet."""
    assert settings.experiments_file is not None
    entries: list[dict[str, Any]] = json.loads(settings.experiments_file.read_text())
    for entry in entries:
        name = str(entry.pop("name"))
        if store.get(name) is None:
            admin.put(name, ExperimentSpec.model_validate(entry), BOOTSTRAP_ACTOR)
            log.info("created experiment %s from %s", name, settings.experiments_file)


def create_app(settings: ServiceSettings) -> FastAPI:
    """The ranking service: /rank, models, experiments, health and metrics, and with the event log on,
    POST /events and the experiment reports."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await asyncio.to_thread(build_state, settings)
        try:
            await asyncio.to_thread(state.start)
            app.state.service = state
            async with _tuned_interpreter(settings):
                yield
        finally:
            await asyncio.to_thread(state.close)

    app = FastAPI(title="apprank", version="0.1.0", lifespan=lifespan)
    app.router.routes.insert(0, rank_route())  # the hot path is matched first
    document_rank(app, settings.max_candidates)
    app.include_router(models_router)
    app.include_router(versions_router)
    app.include_router(experiments_router)
    app.include_router(health_router)
    if settings.event_log:
        app.include_router(events_router(_event_log))
        app.include_router(report_router(_event_log, _experiment_lookup))
    mount_console(app)
    add_error_handlers(app)
    app.add_middleware(
        BodyMiddleware,
        limit=settings.max_body_bytes,
        json_paths=JSON_BODIES,
        msgpack_paths=MSGPACK_BODIES,
    )
    app.add_middleware(HeadMiddleware)
    app.add_middleware(MetricsMiddleware)
    return app


@asynccontextmanager
async def _tuned_interpreter(settings: ServiceSettings) -> AsyncIterator[None]:
    """While serving: the objects built so far frozen out of the cyclic collector, and a short GIL
    switch interval (restored at shutdown)."""
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


def _event_log(state: Annotated[ServiceState, Depends(get_state)]) -> EventLog:
    if state.event_log is None:
        raise UnavailableError("the event log is not configured")
    return state.event_log


def _experiment_lookup(state: Annotated[ServiceState, Depends(get_state)]) -> ExperimentLookup:
    lookup = lookup_from_store(state.store)

    def known(name: str) -> ExperimentArms | None:
        # a name no experiment can have is unknown without a query (PostgreSQL refuses a NUL in text)
        return lookup(name) if valid_name(name) else None

    return known


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: settings from the environment."""
    return create_app(ServiceSettings())
