"""``POST /rank``: the body is read raw and handed to ``RankService`` (no thread-pool hop).

Two routes share the path. ``RankEndpoint`` is a plain ASGI endpoint placed first, so it is the one
that answers: it skips FastAPI's per-request dependency solving and ``Request`` wrapper (about a
sixth of the service's own time at 100 candidates). The FastAPI route behind it is never reached; it
documents the body and responses in the OpenAPI schema (which the fuzz tests drive). Errors raised by
``RankService`` propagate to the app's exception handlers like any route's.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, Response
from starlette.routing import Match, Route

from service.api_models import ERRORS, RankResponse
from service.state import ServiceState

_HEADERS = [(b"content-type", b"application/json")]


class RankEndpoint:
    """The ASGI callable that serves ``POST /rank``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state: ServiceState = scope["app"].state.service
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client went away mid-body: nobody to answer
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        content = state.ranking.handle(b"".join(chunks))  # one chunk: join returns it, no copy
        headers = [*_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class _RankRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope (the metrics' endpoint label)."""

    def matches(self, scope: MutableMapping[str, Any]) -> tuple[Match, MutableMapping[str, Any]]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def rank_route() -> Route:
    """The route that answers ``POST /rank``; include it before ``rank_router``'s."""
    return _RankRoute("/rank", RankEndpoint(), methods=["POST"], include_in_schema=False)


def rank_router(request_schema: dict[str, object]) -> APIRouter:
    """The documented /rank route, with ``request_schema`` as its body (see the module docstring)."""
    router = APIRouter()
    body = {"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema}}}}

    @router.post("/rank", response_model=RankResponse, responses=ERRORS, openapi_extra=body)
    async def rank() -> Response:
        """Rank the candidates for a user: best first, by CTR or CTR x bid."""
        raise AssertionError("POST /rank is answered by RankEndpoint, which is routed first")

    return router
