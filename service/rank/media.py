"""The media types of ``POST /rank``: JSON (the default) or MessagePack, for the body and for the answer.

A request body is MessagePack when its Content-Type is ``application/msgpack`` (or the older
``application/x-msgpack`` and ``application/vnd.msgpack``); anything else that reaches the route is
JSON (``BodyMiddleware`` answers 415 for other types). The answer is chosen from ``Accept``
(RFC 9110 content negotiation, q-values included):

* no Accept, ``*/*``, or JSON preferred: JSON;
* MessagePack with a higher q-value than JSON, or named (not through a wildcard) with the same one
  above 0: MessagePack (``application/msgpack, application/json`` means "MessagePack, else JSON");
* an Accept that allows neither (``text/html``, ``application/json;q=0``): 406 naming the header.
  A JSON answer to a client that said it cannot read JSON would only fail later and less clearly.

Errors are always JSON, in the one error shape, whatever Accept says: every client must read them,
and a client that cannot parse its answer still gets a readable status.
"""

from __future__ import annotations

from enum import Enum

from service.errors import RequestError

MSGPACK_TYPES = frozenset({b"application/msgpack", b"application/x-msgpack", b"application/vnd.msgpack"})
MSGPACK = "application/msgpack"
JSON = "application/json"
_PLAIN_ACCEPTS = frozenset({b"*/*", b"application/json", b"application/*"})


class Wire(Enum):
    """How a body is encoded on the wire."""

    JSON = JSON
    MSGPACK = MSGPACK

    @property
    def content_type(self) -> bytes:
        return self.value.encode()


def media_kind(media: bytes) -> bytes:
    """The type/subtype of a Content-Type or Accept entry, lower-cased, parameters aside."""
    return media.split(b";", 1)[0].strip().lower()


def is_msgpack(media: bytes) -> bool:
    """``application/msgpack`` or one of its older names, parameters aside."""
    return media_kind(media) in MSGPACK_TYPES


def body_wire(content_type: bytes | None) -> Wire:
    """The encoding of a request body from its Content-Type (None, JSON or ``+json``: JSON)."""
    return Wire.MSGPACK if content_type is not None and is_msgpack(content_type) else Wire.JSON


def answer_wire(accept: bytes | None) -> Wire:
    """The encoding of the answer that ``accept`` asks for.

    Raises:
        RequestError: 406 when ``accept`` allows neither JSON nor MessagePack.
    """
    if accept is None or accept in _PLAIN_ACCEPTS:  # what nearly every client sends: no parsing
        return Wire.JSON
    (json_q, _), (msgpack_q, named) = _quality(accept)
    if msgpack_q > json_q or (msgpack_q == json_q > 0 and named):
        return Wire.MSGPACK
    if json_q > 0:
        return Wire.JSON
    msg = f"Accept {accept.decode('latin-1')!r} allows neither {JSON} nor {MSGPACK}"
    raise RequestError.at(("header", "accept"), msg, "not_acceptable", 406)


def _quality(accept: bytes) -> tuple[tuple[float, bool], tuple[float, bool]]:
    """The q-values that ``accept`` gives JSON and MessagePack, each from its most specific range,
    and whether that range names the type (not a wildcard)."""
    best: dict[str, tuple[int, float]] = {}  # wire -> (specificity, q)
    for entry in accept.split(b","):
        kind = media_kind(entry)
        if not kind:
            continue
        q = _q(entry)
        for wire, exact in ((JSON, kind == b"application/json"), (MSGPACK, kind in MSGPACK_TYPES)):
            specificity = 2 if exact else 1 if kind == b"application/*" else 0 if kind == b"*/*" else -1
            if specificity >= 0 and specificity >= best.get(wire, (-1, 0.0))[0]:
                best[wire] = (specificity, q)
    json, msgpack = best.get(JSON, (0, 0.0)), best.get(MSGPACK, (0, 0.0))
    return (json[1], json[0] == 2), (msgpack[1], msgpack[0] == 2)


def _q(entry: bytes) -> float:
    """The ``q`` parameter of one Accept entry (1 when absent or unreadable, clamped to [0, 1])."""
    for parameter in entry.split(b";")[1:]:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 1.0
    return 1.0
