"""``POST /rank``: the body is read raw and handed to ``RankService`` (no thread-pool hop).

``RankEndpoint`` is a plain ASGI endpoint: it skips FastAPI's per-request dependency solving and
``Request`` wrapper, a visible share of the service's own time at a hundred candidates. So FastAPI does
not know the route, and ``document_rank`` adds its operation to the OpenAPI document, generated from
the contract's msgspec structs (the fuzz tests drive it). Errors raised by ``RankService`` propagate
to the app's exception handlers like any route's.

The body may be MessagePack (``Content-Type: application/msgpack``) and so may the answer (``Accept``);
``service.rank.media`` decides, JSON by default. Answers carry ``Vary: accept``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match, Route

from service.rank.contract import rank_operation
from service.rank.media import Wire, answer_wire, body_wire
from service.state import ServiceState

_HEADERS = {wire: [(b"content-type", wire.content_type), (b"vary", b"accept")] for wire in Wire}


class RankEndpoint:
    """The ASGI callable that serves ``POST /rank``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state: ServiceState = scope["app"].state.service
        content_type = accept = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"accept":
                accept = value
        answer = answer_wire(accept)  # a 406 before the body is read
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client went away mid-body: nobody to answer
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)  # one chunk: join returns it, no copy
        content = state.ranking.handle(body, body_wire(content_type), answer)
        headers = [*_HEADERS[answer], (b"content-length", str(len(content)).encode())]
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
