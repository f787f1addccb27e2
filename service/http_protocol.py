"""uvicorn's httptools protocol with the limits it lacks: header size and slow-client timeouts.

uvicorn bounds neither the size of a request's headers under httptools (h11's
``h11_max_incomplete_event_size`` does not apply to it), nor the time a client may take to send them
or its body: one header line of hundreds of MB was read into memory, and sockets sending a byte a
second stayed open for good. ``LimitedHttpToolsProtocol`` adds, per connection:

* ``max_header_bytes``: the request line and headers together; past it the answer is 431 and the
  connection is closed. httptools keeps a header line in memory until it ends, so the bytes fed
  while the headers are incomplete are counted as they arrive (at most one socket read past the
  limit is ever held), and the parsed headers are measured exactly once they are complete.
* ``header_timeout_s``: from the connection's start, or a request's first byte, to the end of its
  headers; then 408 and close.
* ``body_timeout_s``: from the end of the headers to the end of the body; then 408 (when no answer
  has started) and close. Between requests uvicorn's own keep-alive timeout applies.

``apprank serve`` passes the class with its limits (``HttpLimits``, from the settings) to uvicorn,
in every worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one request may take on a connection: header bytes, and seconds for headers and body."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with ``HttpLimits`` (431 for large headers, 408 for slow clients)."""

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._reading_headers = True
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, "the request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:  # refused: whatever else comes is dropped with the connection
            return
        super().data_received(data)
        if self._reading_headers and self._refusal is None and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(*self._headers_too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._header_bytes = 0
        self._arm(self.limits.header_timeout_s, "the request headers")

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refusal = self._headers_too_large()
            raise ValueError("headers too large")  # httptools stops; send_400_response answers 431
        self._arm(self.limits.body_timeout_s, "the request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, or the refusal a parser callback raised for."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._write_refusal(*self._refusal)

    def _headers_too_large(self) -> tuple[int, str, str]:
        msg = f"request line and headers larger than {self.limits.max_header_bytes} bytes"
        return 431, msg, "headers_too_large"

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        answering = (
            self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started
        )
        if answering:  # the app has begun its answer: it cannot become a 408, only be cut
            self.transport.close()
            return
        self._refuse(408, f"{what} did not arrive within {seconds:g} s", "request_timeout")

    def _refuse(self, status: int, msg: str, kind: str) -> None:
        self._refusal = (status, msg, kind)
        self._write_refusal(status, msg, kind)

    def _write_refusal(self, status: int, msg: str, kind: str) -> None:
        """Answer ``status`` in the one error shape and close the connection."""
        self._disarm()
        body = orjson.dumps(
            {"detail": [{"loc": ["header"] if status == 431 else [], "msg": msg, "type": kind}]}
        )
        head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
        head += b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(
            body
        )
        self.transport.write(head + body)
        self.transport.close()
