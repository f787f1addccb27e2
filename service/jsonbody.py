"""Reading JSON request bodies the same way everywhere (/rank's slow path, /events, admin PUTs).

orjson parses. What it refuses is parsed again by the standard library only to locate the cause and
name its field: NaN, Infinity and out-of-range numbers, and strings the database cannot store (a lone
surrogate cannot be encoded as UTF-8, so neither SQLite nor PostgreSQL takes it); anything else is
malformed JSON (400). A NUL character parses fine but PostgreSQL's text type refuses it, so it is
refused on every store alike (``unstorable``). It can only reach a decoded string through the escape
``\\u0000`` (JSON forbids a raw control character in a string), so bodies without that escape skip
the walk for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import orjson

from service.errors import Loc, RequestError, printable

INT64_MIN = -(2**63)
NUL_ESCAPE = b"\\u0000"
_FEW_BACKSLASHES = 16
UNSTORABLE_MSG = "must not contain NUL characters or lone surrogates (the database cannot store them)"
UNSTORABLE = "string_unstorable"
FINITE_MSG = "must be a finite number (NaN, Infinity and out-of-range numbers are not allowed)"


def load_json(body: bytes, loc: Loc = ("body",)) -> Any:
    """The document in ``body``; NUL characters and lone surrogates anywhere in it are refused.

    Raises:
        RequestError: 400 malformed JSON; 422 naming the field of a non-finite or out-of-range number
            or of a string (or key) holding a NUL or a lone surrogate.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return _located(body, str(error), loc)
    if may_hold_nul(body):
        found = next(unstorable(data, loc), None)
        if found is not None:
            raise RequestError.at(found, UNSTORABLE_MSG, UNSTORABLE)
    return data


def may_hold_nul(body: bytes) -> bool:
    """Whether ``body`` holds the escape ``\\u0000`` (or text that looks like it: an escaped backslash
    before ``u0000``). Most bodies hold no backslash at all, which one ``memchr`` tells; those with a
    few are checked at each backslash (``memchr`` again), not by a search of the whole body."""
    at = body.find(b"\\")
    for _ in range(_FEW_BACKSLASHES):
        if at < 0:
            return False
        if body.startswith(NUL_ESCAPE, at):
            return True
        at = body.find(b"\\", at + 1)
    return at >= 0 and NUL_ESCAPE in body


def _located(body: bytes, reason: str, loc: Loc) -> Any:
    """Raise the error of a body orjson refused: located when the standard library can parse it."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise RequestError.at(loc, f"malformed JSON: {reason}", "json_invalid", 400) from None
    for where, finite in _oddities(data, loc):
        if finite:
            raise RequestError.at(where, FINITE_MSG, "finite_number")
        raise RequestError.at(where, UNSTORABLE_MSG, UNSTORABLE)
    raise RequestError.at(loc, f"malformed JSON: {reason}", "json_invalid", 400)


def _oddities(value: Any, loc: Loc) -> Iterator[tuple[Loc, bool]]:
    """Where ``value`` holds a number orjson cannot hold (True) or an unstorable string (False)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield loc, True
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value < 2**64:
        yield loc, True
    elif isinstance(value, str) and not storable(value):
        yield loc, False
    elif isinstance(value, dict):
        for key, item in value.items():
            where = (*loc, printable(key))
            if not storable(key):
                yield where, False
            yield from _oddities(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _oddities(item, (*loc, index))


def unstorable(value: Any, loc: Loc) -> Iterator[Loc]:
    """The locations of strings (values or keys) in ``value`` that the database cannot store."""
    if isinstance(value, str):
        if not storable(value):
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            where = (*loc, printable(key))
            if not storable(key):
                yield where
            yield from unstorable(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from unstorable(item, (*loc, index))


def storable(text: str) -> bool:
    """False when ``text`` holds a NUL or cannot be encoded as UTF-8 (a lone surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
