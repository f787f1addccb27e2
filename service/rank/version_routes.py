"""The version admin: ``POST /models/{name}/promote``, ``POST /models/{name}/rollback`` (admin token) and
``GET /models/{name}/audit``.

The admin token is checked before the body is read (the routes read it themselves), so a caller without
one learns nothing about validation. A change is applied by ``ModelAdmin`` (pointer, audit, counter),
then this worker reloads at once; the others follow on their next store poll.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.versions import VersionError
from service.admin import require_admin
from service.errors import ADMIN_ERRORS, ERRORS, FieldIssue, RequestError, UnavailableError, documented
from service.experiments.models import valid_name
from service.jsonbody import load_json
from service.rank.model_admin import ModelAdmin, ModelAuditEntry, UnknownModelError
from service.rank.model_routes import ModelInfo, loaded_models
from service.state import ServiceState, get_state

router = APIRouter(prefix="/models", tags=["models"])
Version = Annotated[str, Field(min_length=1, max_length=64)]
_Body = TypeVar("_Body", bound=BaseModel)


class PromoteBody(BaseModel):
    """The version to serve."""

    model_config = ConfigDict(extra="forbid")

    version: Version


class RollbackBody(BaseModel):
    """The version to go back to; by default the one published before the current one."""

    model_config = ConfigDict(extra="forbid")

    version: Version | None = None


class VersionChangeResponse(BaseModel):
    """What a promote or rollback did, and what serves now in this worker."""

    model_config = ConfigDict(protected_namespaces=())

    model: str
    action: str
    before: str | None
    after: str
    models: list[ModelInfo]


def model_admin(state: ServiceState) -> ModelAdmin:
    return ModelAdmin(state.settings.models_dir, state.db, state.settings.table_prefix)


async def _body(request: Request, kind: type[_Body]) -> _Body:
    data = load_json(await request.body() or b"{}")  # 400 malformed; 422 NUL, lone surrogates
    try:
        return kind.model_validate(data, strict=True)
    except ValidationError as error:
        issues = [FieldIssue(("body", *e["loc"]), e["msg"], e["type"]) for e in error.errors()]
        raise RequestError(422, issues) from None


async def _apply(
    state: ServiceState, name: str, action: str, version: str | None, actor: str
) -> JSONResponse:
    admin = model_admin(state)
    try:
        if action == "promote":
            assert version is not None
            change = await asyncio.to_thread(admin.promote, name, version, actor)
        else:
            change = await asyncio.to_thread(admin.rollback, name, version, actor)
    except UnknownModelError as error:
        raise RequestError.at(("path", "name"), str(error), "not_found", status=404) from None
    except VersionError as error:
        raise RequestError.at(("body", "version"), str(error), "unknown_version") from None
    except OSError as error:  # a read-only models volume (compose mounts it so): say so, not a 500
        raise UnavailableError(
            f"cannot move the current pointer of {name!r} here ({error.strerror}): run `apprank models "
            f"{action}` where the models directory is writable"
        ) from None
    await asyncio.to_thread(state.sync.reload_models)
    body = VersionChangeResponse(
        model=change.model,
        action=change.action,
        before=change.before,
        after=change.after,
        models=loaded_models(state.registry),
    )
    return JSONResponse(body.model_dump(mode="json"))


ANSWERS = {**ERRORS, **ADMIN_ERRORS, **documented(404)}


@router.post("/{name}/promote", response_model=VersionChangeResponse, responses=ANSWERS)
async def promote(
    name: str,
    request: Request,
    actor: Annotated[str, Depends(require_admin)],
    state: Annotated[ServiceState, Depends(get_state)],
) -> JSONResponse:
    """Serve ``version`` of model ``name`` in every worker (audited with the token's name)."""
    body = await _body(request, PromoteBody)
    return await _apply(state, name, "promote", body.version, actor)


@router.post("/{name}/rollback", response_model=VersionChangeResponse, responses=ANSWERS)
async def rollback(
    name: str,
    request: Request,
    actor: Annotated[str, Depends(require_admin)],
    state: Annotated[ServiceState, Depends(get_state)],
) -> JSONResponse:
    """Serve the previous version of ``name`` again (or the one given) in every worker (audited)."""
    body = await _body(request, RollbackBody)
    return await _apply(state, name, "rollback", body.version, actor)


@router.get("/{name}/audit", response_model=list[ModelAuditEntry], responses=documented(404))
async def audit(name: str, state: Annotated[ServiceState, Depends(get_state)]) -> list[ModelAuditEntry]:
    """The version changes of model ``name``, oldest first (404 for a name no model can have)."""
    if not valid_name(name):
        raise RequestError.at(("path", "name"), f"no model named {name!r}", "not_found", status=404)
    return await asyncio.to_thread(model_admin(state).audit, name)
