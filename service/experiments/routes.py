"""``GET /experiments``, ``GET|PUT|DELETE /experiments/{name}`` and ``GET /experiments/{name}/audit``.

The admin token is checked before anything else the client sent: ``PUT`` reads its body itself, after
the ``require_admin`` dependency, so an unauthenticated request learns nothing about validation (401,
never a 422). A name that no experiment can have (``check_name``) is answered 404 without a query, so
no store sees it (PostgreSQL refuses a NUL in a text parameter).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.admin import require_admin
from service.errors import ADMIN_ERRORS, ERRORS, FieldIssue, RequestError, documented
from service.experiments.models import AuditEntry, Experiment, ExperimentSpec, valid_name
from service.jsonbody import load_json
from service.state import ServiceState, get_state

router = APIRouter(prefix="/experiments", tags=["experiments"])
NOT_FOUND = documented(404)


def _not_found(name: str) -> RequestError:
    return RequestError.at(("path", "name"), f"no experiment named {name!r}", "not_found", status=404)


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its ``$ref``s to ``defs`` replaced by the definitions (no shared components)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return _inline(defs[ref.rsplit("/", 1)[1]], defs)
        return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _spec_body() -> dict[str, Any]:
    """The OpenAPI request body of ``PUT /experiments/{name}`` (the route reads the body itself)."""
    schema = ExperimentSpec.model_json_schema()
    inlined = _inline(schema, schema.get("$defs", {}))
    return {"required": True, "content": {"application/json": {"schema": inlined}}}


def parse_spec(body: bytes) -> ExperimentSpec:
    """The ``ExperimentSpec`` in a PUT body.

    Raises:
        RequestError: 400 malformed JSON; 422 naming the field (NaN, Infinity, 1e400, NUL, lone
            surrogates, and every rule of ``ExperimentSpec``).
    """
    data = load_json(body)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as error:
        issues = [FieldIssue(("body", *e["loc"]), e["msg"], e["type"]) for e in error.errors()]
        raise RequestError(422, issues) from None


@router.get("", response_model=list[Experiment])
async def list_experiments(state: ServiceState = Depends(get_state)) -> list[Experiment]:  # noqa: B008
    """Every experiment, as stored."""
    return await asyncio.to_thread(state.store.experiments)


@router.get("/{name}", response_model=Experiment, responses=NOT_FOUND)
async def get_experiment(name: str, state: ServiceState = Depends(get_state)) -> Experiment:  # noqa: B008
    """One experiment, with its bucket allocation."""
    experiment = await asyncio.to_thread(state.store.get, name) if valid_name(name) else None
    if experiment is None:
        raise _not_found(name)
    return experiment


@router.put(
    "/{name}",
    response_model=Experiment,
    responses={**ERRORS, **ADMIN_ERRORS, **documented(409)},
    openapi_extra={"requestBody": _spec_body()},
)
async def put_experiment(
    name: str,
    request: Request,
    state: ServiceState = Depends(get_state),  # noqa: B008
    actor: str = Depends(require_admin),
) -> JSONResponse:
    """Create (201) or change (200) an experiment; audited under the admin token's name."""
    spec = parse_spec(await request.body())
    experiment, created = await asyncio.to_thread(state.admin.put, name, spec, actor)
    return JSONResponse(experiment.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/{name}", status_code=204, responses={**ADMIN_ERRORS, **NOT_FOUND})
async def delete_experiment(
    name: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    actor: str = Depends(require_admin),
) -> Response:
    """Delete an experiment (its audit history stays)."""
    if not valid_name(name) or await asyncio.to_thread(state.admin.delete, name, actor) is None:
        raise _not_found(name)
    return Response(status_code=204)


@router.get("/{name}/audit", response_model=list[AuditEntry], responses=NOT_FOUND)
async def experiment_audit(name: str, state: ServiceState = Depends(get_state)) -> list[AuditEntry]:  # noqa: B008
    """Every change of an experiment, oldest first: when, what, and which token made it."""
    if not valid_name(name):
        raise _not_found(name)
    return await asyncio.to_thread(state.store.audit, name)
