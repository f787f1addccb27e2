"""``GET /healthz`` (alive), ``GET /readyz`` (models loaded, store writable), ``GET /metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.db import StoreUnavailableError
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
    """Ready when at least one model is loaded and the database takes a (committed) write."""
    reasons = []
    models = sorted(state.registry.models)
    if not models:
        reasons.append(f"no model loaded from {state.settings.models_dir}")
    if not await asyncio.to_thread(state.db.ping):
        reasons.append("experiment store unreachable")
    elif (problem := await asyncio.to_thread(_write_problem, state)) is not None:
        reasons.append(problem)
    body = Status(status="not ready" if reasons else "ready", reasons=reasons, models=models)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


def _write_problem(state: ServiceState) -> str | None:
    """Why the database cannot be written now, or None when a write commits."""
    try:
        state.store.check_writable()
    except Exception as error:  # noqa: BLE001 - readiness reports any failure as not ready
        cause = error.cause if isinstance(error, StoreUnavailableError) else error
        return f"the database cannot be written: {type(cause).__name__}: {cause}"
    return None


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus exposition (aggregated over workers in multiprocess mode)."""
    content, content_type = await asyncio.to_thread(render_latest)
    return Response(content, media_type=content_type)
