"""``GET /models``, ``POST /models/reload`` and the version admin: ``GET /models/{name}/versions``,
``POST /models/{name}/promote``, ``POST /models/{name}/rollback``, ``GET /models/{name}/audit``.

A promote or rollback moves the model's ``current`` pointer, audits the change with the admin token's
name and bumps the ``models`` counter: this worker reloads at once, every other worker within its store
poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from service.admin import require_admin
from service.errors import ADMIN_ERRORS, ERRORS, ErrorItem
from service.experiments.store import MODELS
from service.rank.registry import LoadedModel, ModelRegistry
from service.state import ServiceState, get_state

router = APIRouter()


class VersionInfo(BaseModel):
    """One loaded version of a model (pin it in an experiment arm as ``name@version``)."""

    version: str
    created_at: datetime
    loaded_at: datetime
    current: bool
    metrics: dict[str, dict[str, float]]


class ModelInfo(BaseModel):
    """A loaded model by name (where it lies on the server's disk is none of a client's business):
    its serving version, and every loaded version in ``versions`` (oldest first)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    model: str
    version: str
    schema_hash: str
    loaded_at: datetime
    metrics: dict[str, dict[str, float]]
    versions: list[VersionInfo] = []


class ReloadResponse(BaseModel):
    """What ``POST /models/reload`` did, and what serves now (``detail``: one issue per refused bundle)."""

    loaded: list[str]
    unchanged: list[str]
    refused: dict[str, str]
    removed: list[str]
    current: dict[str, str] = {}
    models: list[ModelInfo]
    detail: list[ErrorItem] = []


def model_info(model: LoadedModel, versions: Mapping[str, LoadedModel] | None = None) -> ModelInfo:
    manifest = model.bundle.manifest
    loaded = sorted((versions or {model.version: model}).values(), key=_created)
    return ModelInfo(
        name=model.name,
        model=manifest.model,
        version=manifest.version,
        schema_hash=manifest.schema_hash,
        loaded_at=model.loaded_at,
        metrics=manifest.metrics,
        versions=[
            VersionInfo(
                version=v.version,
                created_at=v.bundle.manifest.created_at,
                loaded_at=v.loaded_at,
                current=v is model,
                metrics=v.bundle.manifest.metrics,
            )
            for v in loaded
        ],
    )


def _created(model: LoadedModel) -> tuple[datetime, str]:
    return model.bundle.manifest.created_at, model.version


def loaded_models(registry: ModelRegistry) -> list[ModelInfo]:
    """Every model the registry serves, by name, with its loaded versions."""
    return [model_info(m, registry.versions.get(name)) for name, m in sorted(registry.models.items())]


@router.get("/models", response_model=list[ModelInfo])
async def list_models(state: ServiceState = Depends(get_state)) -> list[ModelInfo]:  # noqa: B008
    """The loaded bundles."""
    return loaded_models(state.registry)


@router.post("/models/reload", response_model=ReloadResponse, responses={**ERRORS, **ADMIN_ERRORS})
async def reload_models(
    state: ServiceState = Depends(get_state),  # noqa: B008
    actor: str = Depends(require_admin),
) -> JSONResponse:
    """Load new or changed bundles in every worker; a broken bundle is refused and the old one serves."""
    report = await asyncio.to_thread(state.sync.reload_models)
    await asyncio.to_thread(state.store.bump, MODELS)
    detail = [
        ErrorItem(loc=["models", name], msg=msg, type="bundle_refused")
        for name, msg in report.refused.items()
    ]
    body = ReloadResponse(
        loaded=report.loaded,
        unchanged=report.unchanged,
        refused=report.refused,
        removed=report.removed,
        current=report.current,
        models=loaded_models(state.registry),
        detail=detail,
    )
    del actor
    return JSONResponse(body.model_dump(mode="json"), status_code=422 if report.refused else 200)
