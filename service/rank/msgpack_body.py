"""Reading /rank bodies sent as MessagePack, held to the rules of JSON bodies (``service.jsonbody``).

MessagePack can carry what JSON cannot: NaN and infinities, binary strings, extension types and
timestamps, and map keys that are not strings. None of them is a valid /rank value, so a body that
holds one is refused with a 422 naming the field, exactly where its JSON twin (when it has one: NaN is
refused in JSON too) is refused; strings holding NUL are refused as in JSON (no store can keep them).
Invalid UTF-8 in a string, truncated or trailing bytes are malformed MessagePack (400).

The fast path (``payload``) decodes with the same msgspec structs as JSON bodies; it hands a body to
the slow path here when a float in it may be non-finite (``may_hold_non_finite``: a byte scan, no
false negatives) or a string holds a NUL (``holds_nul``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import msgspec

from service.errors import Loc, RequestError, printable
from service.jsonbody import FINITE_MSG, UNSTORABLE, UNSTORABLE_MSG, storable

# float 64 (0xcb) or float 32 (0xca) whose exponent bits are all ones: NaN or an infinity.
# Any float of the body is written after its marker byte, so no non-finite float escapes the scan;
# a string that happens to hold these bytes only sends the body to the slow path.
_NON_FINITE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]|\xca[\x7f\xff][\x80-\xff]")
_ANY_DECODER = msgspec.msgpack.Decoder()
_JSON = msgspec.json.Encoder()
_NUL_ESCAPE = b"\\u0000"
TYPE_MSG = (
    "must be a string, number, boolean, null, array or map "
    "(MessagePack binary, extension and timestamp values are not accepted)"
)
KEY_MSG = "map keys must be strings"


def may_hold_non_finite(body: bytes) -> bool:
    """Whether ``body`` may hold a NaN or an infinity (False: it holds none)."""
    return _NON_FINITE.search(body) is not None


def holds_nul(decoded: msgspec.Struct) -> bool:
    """Whether a string anywhere in ``decoded`` (keys too) holds a NUL character.

    msgspec writes a NUL as the escape ``\\u0000`` in JSON, and only a NUL is written so (a
    backslash in a string is written ``\\\\``), so one C call encodes and one ``memmem`` looks.
    """
    text = _JSON.encode(decoded)
    return _NUL_ESCAPE in text and _real_nul(text)


def _real_nul(text: bytes) -> bool:
    """``\\u0000`` in ``text`` that is an escape, not a backslash written ``\\\\`` before ``u0000``."""
    return re.search(rb"(?<!\\)(?:\\\\)*\\u0000", text) is not None


def load_msgpack(body: bytes, loc: Loc = ("body",)) -> Any:
    """The document in ``body``, every value checked to be one a JSON body could hold.

    Raises:
        RequestError: 400 malformed MessagePack; 422 naming the field of a non-finite number, a
            binary, extension or timestamp value, a map key that is not a string, or a string (or
            key) holding a NUL.
    """
    try:
        data = _ANY_DECODER.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError) as error:
        raise RequestError.at(loc, f"malformed MessagePack: {error}", "msgpack_invalid", 400) from None
    for where, msg, kind in _oddities(data, loc):
        raise RequestError.at(where, msg, kind)
    return data


def _oddities(value: Any, loc: Loc) -> Iterator[tuple[Loc, str, str]]:
    """Where ``value`` holds what a JSON body cannot, or a string no store can keep."""
    kind = type(value)
    if kind is str:
        if not storable(value):
            yield loc, UNSTORABLE_MSG, UNSTORABLE
    elif kind is float:
        if not math.isfinite(value):
            yield loc, FINITE_MSG, "finite_number"
    elif kind is dict:
        for key, item in value.items():
            where = (*loc, printable(key) if type(key) is str else printable(str(key)))
            if type(key) is not str:
                yield where, KEY_MSG, "msgpack_key"
            elif not storable(key):
                yield where, UNSTORABLE_MSG, UNSTORABLE
            yield from _oddities(item, where)
    elif kind is list:
        for index, item in enumerate(value):
            yield from _oddities(item, (*loc, index))
    elif kind not in (int, bool, type(None)):
        yield loc, TYPE_MSG, "msgpack_type"
