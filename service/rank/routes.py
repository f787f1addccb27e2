"""``POST /rank``: the body is read raw and handed to ``RankService`` (no thread-pool hop).

``RankEndpoint`` is a plain ASGI endpoint: it skips FastAPI's per-request dependency solving and
``Request`` wrapper, a visible share of the service's own time at a hundred candidates. So FastAPI does
not know the route, and ``document_rank`` adds its operation to the OpenAPI document, generated from
the contract's msgspec structs (the fuzz tests drive it). Errors raised by ``RankService`` propagate
to the app's exception handlers like any route's.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match, Route

from service.rank.contract import rank_operation
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
    """The route that answers ``POST /rank``."""
    return _RankRoute("/rank", RankEndpoint(), methods=["POST"], include_in_schema=False)


def document_rank(app: FastAPI, max_candidates: int) -> None:
    """Add ``POST /rank`` and the schemas it refers to to ``app``'s OpenAPI document."""
    operation, components = rank_operation(max_candidates)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["paths"] = {"/rank": {"post": operation}, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
