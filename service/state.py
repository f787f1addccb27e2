"""The objects one app instance runs on, built at startup and reached by routes through ``get_state``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.auth import AdminTokens
from service.db import Database
from service.events.log import EventLog
from service.experiments.admin import ExperimentAdmin
from service.experiments.router import Router
from service.experiments.store import ExperimentStore
from service.experiments.sync import StoreSync
from service.rank.rank_service import RankService
from service.rank.registry import ModelRegistry
from service.settings import ServiceSettings


@dataclass
class ServiceState:
    """Everything the routes call into; ``event_log`` is None when ``APPRANK_EVENT_LOG`` is off."""

    settings: ServiceSettings
    db: Database
    store: ExperimentStore
    registry: ModelRegistry
    router: Router
    sync: StoreSync
    ranking: RankService
    admin: ExperimentAdmin
    tokens: AdminTokens
    event_log: EventLog | None

    def start(self) -> None:
        """Start the background work: the event log's threads, then the store poller."""
        if self.event_log is not None:
            self.event_log.start()
        self.sync.start()

    def close(self) -> None:
        """Stop polling, write and commit everything the event log holds, close the database."""
        self.sync.stop()
        if self.event_log is not None:
            self.event_log.close()
        self.db.close()


def get_state(request: Request) -> ServiceState:
    """Dependency: the app's ServiceState (set once, by the app's lifespan)."""
    state: ServiceState = request.app.state.service
    return state
