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
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from service.errors import Loc, RequestError, printable
from service.jsonbody import FINITE_MSG, UNSTORABLE, UNSTORABLE_MSG, storable
from service.rank.contract import RankRequestBody

_FLOAT64, _FLOAT32 = 0xCB, 0xCA
_ANY_DECODER = msgspec.msgpack.Decoder()
_JSON = msgspec.json.Encoder()
_MSGPACK = msgspec.msgpack.Encoder()
_APP_ID = attrgetter("app_id")
_FEATURES = attrgetter("features")
_NUL_ESCAPE = b"\\u0000"
TYPE_MSG = (
    "must be a string, number, boolean, null, array or map "
    "(MessagePack binary, extension and timestamp values are not accepted)"
)
KEY_MSG = "map keys must be strings"


def may_hold_non_finite(body: bytes) -> bool:
    """Whether ``body`` may hold a NaN or an infinity (False: it holds none).

    A float 64 (marker 0xcb) or float 32 (0xca) is non-finite when its exponent bits are all ones:
    its first byte is 0x7f or 0xff and its second one at least 0xf0 (float 64) or 0x80 (float 32).
    Every float of the body follows its marker, so none escapes the scan; a string that happens to
    hold such bytes only sends the body to the slow path. Most bodies hold no 0x7f nor 0xff byte at
    all, which two ``memchr`` tell.
    """
    if b"\x7f" not in body and b"\xff" not in body:
        return False
    data = np.frombuffer(body, dtype=np.uint8)
    first = np.flatnonzero((data[1:-1] & 0x7F) == 0x7F) + 1  # 0x7f or 0xff, with a byte on each side
    marker, second = data[first - 1], data[first + 1]
    return bool((((marker == _FLOAT64) & (second >= 0xF0)) | ((marker == _FLOAT32) & (second >= 0x80))).any())


def holds_nul(body: bytes, decoded: RankRequestBody) -> bool:
    """Whether a string anywhere in ``decoded`` (keys too), decoded from ``body``, holds a NUL.

    A NUL in a string is a zero byte of the body, so a body without one holds none (one ``memchr``);
    but floats (bids) hold zero bytes, so then each part is looked at: the ids joined, and the
    feature objects written again as MessagePack, where their strings are the only zero bytes when
    their values are strings (the usual case). Else they are written as JSON, where a NUL is the
    escape ``\\u0000`` (a backslash is written ``\\\\``).
    """
    if b"\x00" not in body:
        return False
    candidates = decoded.candidates
    ids = [decoded.user_id, decoded.experiment or "", *map(_APP_ID, candidates)]
    if "\x00" in "".join(ids) or _json_nul((decoded.user, decoded.context)):
        return True
    features = list(map(_FEATURES, candidates))
    return b"\x00" in _MSGPACK.encode(features) and _json_nul(features)


def _json_nul(value: Any) -> bool:
    text = _JSON.encode(value)
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
