"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request): request bodies (limit,
encoding, media type), HEAD, and metrics."""

from __future__ import annotations

import time
import zlib
from typing import Any, cast

import orjson

from service.metrics import HTTP_DURATION, HTTP_REQUESTS
from service.rank.media import is_msgpack

_MAX_LABEL_SETS = 1_024  # endpoints are route templates and statuses few: a bound all the same
Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Any


class BodyMiddleware:
    """Request bodies as the app may read them: at most ``limit`` bytes, plain JSON where JSON is due.

    * Over ``limit`` by Content-Length, or while a chunked body streams: 413.
    * ``Content-Encoding: gzip`` is decoded here, its decoded size held to ``limit`` too (a gzip bomb
      is a 413 once ``limit`` bytes came out, not a worker out of memory); other encodings: 415.
    * ``json_paths`` (``POST /rank``, ``POST /events``) take ``application/json`` (or ``+json``);
      another Content-Type is a 415. No Content-Type at all is read as JSON: hand-written clients
      often send none, and the body is checked as JSON either way. ``msgpack_paths`` (``POST /rank``)
      take ``application/msgpack`` too.

    A body with a Content-Length and no encoding passes through untouched (the common case costs
    nothing); a chunked or encoded one is read whole here and handed over as one message.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        json_paths: frozenset[str] = frozenset(),
        msgpack_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limit = limit
        self.json_paths = json_paths
        self.msgpack_paths = msgpack_paths

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await send_error(send, *refusal)
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding == b"identity" and (b"content-length" in headers or b"transfer-encoding" not in headers):
            await self.app(scope, receive, send)  # a known length within the limit, or no body at all
            return
        body = await self._read(receive)
        if body is None:  # the client went away mid-body: nobody to answer
            return
        if len(body) > self.limit:
            await send_error(send, *self._too_large("body"))
            return
        if encoding == b"gzip":
            try:
                decoded = gunzip(body, self.limit)
            except ValueError as error:
                await send_error(send, 400, ["body"], str(error), "gzip_invalid")
                return
            if decoded is None:
                await send_error(send, *self._too_large("decompressed body"))
                return
            body = decoded
        await self.app(_plain(scope, len(body)), _replay(body, receive), send)

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, list[str], str, str] | None:
        """The 413 or 415 a request gets from its headers alone, if any."""
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return self._too_large("body")
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b"gzip"):
            msg = f"Content-Encoding {encoding.decode('latin-1')!r} is not supported (gzip is)"
            return 415, ["header", "content-encoding"], msg, "unsupported_encoding"
        if scope["method"] == "POST" and scope["path"] in self.json_paths:
            media = headers.get(b"content-type")
            if media is not None and not is_json(media):
                if scope["path"] in self.msgpack_paths and is_msgpack(media):
                    return None
                msg = "send the body as JSON with Content-Type: application/json"
                if scope["path"] in self.msgpack_paths:
                    msg += " (or as MessagePack with Content-Type: application/msgpack)"
                return 415, ["header", "content-type"], msg, "unsupported_media_type"
        return None

    def _too_large(self, what: str) -> tuple[int, list[str], str, str]:
        return 413, ["body"], f"{what} larger than {self.limit} bytes", "body_too_large"

    async def _read(self, receive: Any) -> bytes | None:
        """The body, or as soon as it passes ``limit`` what came so far (None: the client left)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.limit or not message.get("more_body", False):
                return b"".join(chunks)


def is_json(media: bytes) -> bool:
    """``application/json`` or a ``+json`` type, parameters (charset) aside."""
    kind = media.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


def gunzip(body: bytes, limit: int) -> bytes | None:
    """The decoded body; None when it would pass ``limit`` bytes.

    Raises:
        ValueError: ``body`` is not one whole gzip stream.
    """
    decoder = zlib.decompressobj(wbits=31)
    try:
        # max_length bounds what one call may produce, so a bomb is never inflated past the limit
        plain = decoder.decompress(body, limit + 1)
    except zlib.error as error:
        raise ValueError(f"not valid gzip: {error}") from None
    if len(plain) > limit or decoder.unconsumed_tail:
        return None
    if not decoder.eof:
        raise ValueError("not valid gzip: the stream is cut short")
    return plain


def _plain(scope: Scope, length: int) -> Scope:
    """``scope`` of the decoded body: its length, no encoding and no chunking."""
    dropped = (b"content-length", b"content-encoding", b"transfer-encoding")
    headers = [(k, v) for k, v in scope["headers"] if k not in dropped]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that yields ``body`` as one message, then whatever the client sends next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return cast(Message, await receive())
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_error(send: Any, status: int, loc: list[str], msg: str, kind: str) -> None:
    """Answer in the one error shape, from the ASGI layer (before any route runs)."""
    body = orjson.dumps({"detail": [{"loc": loc, "msg": msg, "type": kind}]})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HeadMiddleware:
    """``HEAD`` wherever ``GET`` is (RFC 9110): the GET route answers, its body is not sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class MetricsMiddleware:
    """Counts requests by endpoint (the route's path template) and status, and times them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

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
            children = self._children.get((endpoint, status))
            if children is None:  # labels() locks and validates: looked up once per label set
                children = HTTP_REQUESTS.labels(endpoint, str(status)), HTTP_DURATION.labels(endpoint)
                if len(self._children) < _MAX_LABEL_SETS:
                    self._children[(endpoint, status)] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
