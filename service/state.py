"""The objects one app instance runs on, built in the lifespan and reached by routes through Depends."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.auth import AdminTokens
from service.db import Database
from service.experiments.admin import ExperimentAdmin
from service.experiments.router import Router
from service.experiments.store import ExperimentStore
from service.experiments.sync import StoreSync
from service.rank.rank_service import RankService
from service.rank.registry import ModelRegistry
from service.settings import ServiceSettings


@dataclass
class ServiceState:
    """Everything the routes call into."""

    settings: ServiceSettings
    db: Database
    store: ExperimentStore
    registry: ModelRegistry
    router: Router
    sync: StoreSync
    ranking: RankService
    admin: ExperimentAdmin
    tokens: AdminTokens


def get_state(request: Request) -> ServiceState:
    """Dependency: the app's ServiceState."""
    state: ServiceState = request.app.state.service
    return state
