"""``GET /models`` and ``POST /models/reload``."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from service.admin import require_admin
from service.errors import ADMIN_ERRORS, ERRORS, ErrorItem
from service.experiments.store import MODELS
from service.rank.registry import LoadedModel
from service.state import ServiceState, get_state

router = APIRouter()


class ModelInfo(BaseModel):
    """A loaded bundle (by name: where it lies on the server's disk is none of a client's business)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    model: str
    version: str
    schema_hash: str
    loaded_at: datetime
    metrics: dict[str, dict[str, float]]


class ReloadResponse(BaseModel):
    """What ``POST /models/reload`` did, and what serves now (``detail``: one issue per refused bundle)."""

    loaded: list[str]
    unchanged: list[str]
    refused: dict[str, str]
    removed: list[str]
    models: list[ModelInfo]
    detail: list[ErrorItem] = []


def model_info(model: LoadedModel) -> ModelInfo:
    manifest = model.bundle.manifest
    return ModelInfo(
        name=model.name,
        model=manifest.model,
        version=manifest.version,
        schema_hash=manifest.schema_hash,
        loaded_at=model.loaded_at,
        metrics=manifest.metrics,
    )


@router.get("/models", response_model=list[ModelInfo])
async def list_models(state: ServiceState = Depends(get_state)) -> list[ModelInfo]:  # noqa: B008
    """The loaded bundles."""
    return [model_info(m) for _, m in sorted(state.registry.models.items())]


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
        models=[model_info(m) for _, m in sorted(state.registry.models.items())],
        detail=detail,
    )
    del actor
    return JSONResponse(body.model_dump(mode="json"), status_code=422 if report.refused else 200)
