"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request): body limit and metrics."""

from __future__ import annotations

import time
from typing import Any

import orjson

from service.metrics import HTTP_DURATION, HTTP_REQUESTS

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Any


class BodyTooLargeError(Exception):
    """Raised by the wrapped ``receive`` once a chunked body passes the limit."""


async def _send_413(send: Any, limit: int) -> None:
    body = orjson.dumps(
        {"detail": [{"loc": ["body"], "msg": f"body larger than {limit} bytes", "type": "body_too_large"}]}
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Answers 413 to bodies over ``limit`` bytes, by Content-Length or while a chunked body streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _send_413(send, self.limit)
                    return
                await self.app(scope, receive, send)
                return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Any, send: Any) -> None:
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _send_413(send, self.limit)


class MetricsMiddleware:
    """Counts requests by endpoint (the route's path template) and status, and times them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, status_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(endpoint, str(status)).inc()
            HTTP_DURATION.labels(endpoint).observe(time.perf_counter() - started)
