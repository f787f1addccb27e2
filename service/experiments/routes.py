"""``GET /experiments``, ``GET|PUT|DELETE /experiments/{name}`` and ``GET /experiments/{name}/audit``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from service.admin import require_admin
from service.errors import ADMIN_ERRORS, ERRORS, RequestError, documented
from service.experiments.models import AuditEntry, Experiment, ExperimentSpec
from service.state import ServiceState, get_state

router = APIRouter(prefix="/experiments", tags=["experiments"])
NOT_FOUND = documented(404)


def _not_found(name: str) -> RequestError:
    return RequestError.at(("path", "name"), f"no experiment named {name!r}", "not_found", status=404)


@router.get("", response_model=list[Experiment])
async def list_experiments(state: ServiceState = Depends(get_state)) -> list[Experiment]:  # noqa: B008
    """Every experiment, as stored."""
    return await asyncio.to_thread(state.store.experiments)


@router.get("/{name}", response_model=Experiment, responses=NOT_FOUND)
async def get_experiment(name: str, state: ServiceState = Depends(get_state)) -> Experiment:  # noqa: B008
    """One experiment, with its bucket allocation."""
    experiment = await asyncio.to_thread(state.store.get, name)
    if experiment is None:
        raise _not_found(name)
    return experiment


@router.put("/{name}", response_model=Experiment, responses={**ERRORS, **ADMIN_ERRORS, **documented(409)})
async def put_experiment(
    name: str,
    spec: ExperimentSpec,
    state: ServiceState = Depends(get_state),  # noqa: B008
    actor: str = Depends(require_admin),
) -> JSONResponse:
    """Create (201) or change (200) an experiment; audited under the admin token's name."""
    experiment, created = await asyncio.to_thread(state.admin.put, name, spec, actor)
    return JSONResponse(experiment.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/{name}", status_code=204, responses={**ADMIN_ERRORS, **NOT_FOUND})
async def delete_experiment(
    name: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    actor: str = Depends(require_admin),
) -> Response:
    """Delete an experiment (its audit history stays)."""
    if await asyncio.to_thread(state.admin.delete, name, actor) is None:
        raise _not_found(name)
    return Response(status_code=204)


@router.get("/{name}/audit", response_model=list[AuditEntry])
async def experiment_audit(name: str, state: ServiceState = Depends(get_state)) -> list[AuditEntry]:  # noqa: B008
    """Every change of an experiment, oldest first: when, what, and which token made it."""
    return await asyncio.to_thread(state.store.audit, name)
