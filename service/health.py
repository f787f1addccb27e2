"""``GET /healthz`` (alive), ``GET /readyz`` (models loaded, store reachable), ``GET /metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.metrics import render_latest
from service.state import ServiceState, get_state

router = APIRouter()


class Status(BaseModel):
    """Liveness or readiness, the reasons it is not ready and the loaded models."""

    status: str
    reasons: list[str] = []
    models: list[str] = []


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    """The process answers."""
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: {"model": Status}})
async def readyz(state: ServiceState = Depends(get_state)) -> JSONResponse:  # noqa: B008
    """Ready when at least one model is loaded and the store answers."""
    reasons = []
    models = sorted(state.registry.models)
    if not models:
        reasons.append(f"no model loaded from {state.settings.models_dir}")
    if not await asyncio.to_thread(state.db.ping):
        reasons.append("experiment store unreachable")
    body = Status(status="not ready" if reasons else "ready", reasons=reasons, models=models)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus exposition (aggregated over workers in multiprocess mode)."""
    content, content_type = await asyncio.to_thread(render_latest)
    return Response(content, media_type=content_type)
