"""Parsing and validating the body of ``POST /rank``, columnar and fast.

Two paths give the same answer. The fast one decodes with msgspec into typed structs (the types are
checked in C while decoding, and the structs are cheaper to make than dicts), then runs the few checks
that types cannot express (lengths, duplicate app_ids, bids >= 0, limits) over whole columns. Whenever
the fast path meets anything it does not accept, whatever the reason, the request goes through the
slow path, which alone decides what is wrong and says so: orjson parses, and the checks run over whole
columns (``set(map(type, column))``, numpy) instead of a pydantic model per candidate, which would
cost more than the model itself at a thousand candidates. Every failure is a ``RequestError`` naming
the field path and the reason.
Bodies orjson refuses are parsed again by the standard library only to find a NaN, an Infinity, an
out-of-range number or a lone surrogate and name its field; anything else is malformed JSON (400)
(``service.jsonbody``). Strings the database cannot store (NUL, lone surrogates) are refused with a
422 naming the field, so both stores accept the same requests.

The fast path's types are chosen so that it never accepts what the slow path refuses, nor reads a
value differently (``tests/service/test_payload_paths.py`` checks this on generated and damaged bodies):
integers outside int64 (which orjson reads as floats or refuses), feature values other than JSON
scalars or lists of them (which only the encoder may refuse) and unknown keys (msgspec would skip their
values unchecked, where orjson refuses bad UTF-8 or 1e400) leave it for the slow path, and so does any
body holding the escape ``\\u0000`` (msgspec decodes a NUL; the slow path refuses it).

A MessagePack body (``msgpack=True``) goes through the same two paths with the same structs and
checks: msgspec's MessagePack decoder for the fast one, ``service.rank.msgpack_body`` for the slow one,
which also refuses what only MessagePack can carry (NaN and infinities, binary, extension and
timestamp values, non-string keys) at its field (``tests/service/test_msgpack_rank.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any, cast

import msgspec
import numpy as np
import numpy.typing as npt

from service.errors import Loc, RequestError
from service.experiments.models import Objective
from service.jsonbody import load_json, may_hold_nul
from service.rank.contract import MAX_ID_LENGTH, RankRequestBody
from service.rank.msgpack_body import holds_nul, load_msgpack, may_hold_non_finite

_NONE = type(None)
_OBJECTIVES = {o.value: o for o in Objective}


@dataclass(slots=True)
class RankRequest:
    """A validated /rank request, with the candidate columns the ranker needs.

    ``bids`` is None when no candidate has a bid, else float64 with NaN where a bid is absent.
    ``features`` holds one dict per candidate (``{}`` when absent).
    """

    user_id: str
    user: dict[str, Any]
    context: dict[str, Any]
    app_ids: list[str]
    features: list[dict[str, Any]]
    bids: npt.NDArray[np.float64] | None
    objective: Objective | None
    top_k: int | None
    experiment: str | None


_DECODER = msgspec.json.Decoder(RankRequestBody)
_MSGPACK_DECODER = msgspec.msgpack.Decoder(RankRequestBody)
_APP_ID = attrgetter("app_id")
_BID = attrgetter("bid")
_FEATURES = attrgetter("features")


def parse_rank_request(body: bytes, max_candidates: int, msgpack: bool = False) -> RankRequest:
    """Validate a /rank body, JSON or (``msgpack``) MessagePack.

    Raises:
        RequestError: 400 for a malformed document, 422 for a valid one that breaks a rule.
    """
    if msgpack:
        return _fast_msgpack(body, max_candidates) or _slow_msgpack(body, max_candidates)
    return _fast_path(body, max_candidates) or _slow_path(body, max_candidates)


def _fast_path(body: bytes, max_candidates: int) -> RankRequest | None:
    """The request, when msgspec decodes ``body`` into ``RankRequestBody`` and every other check passes;
    else None."""
    if may_hold_nul(body):
        return None
    try:
        data = _DECODER.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):  # ValidationError, bad UTF-8, deep nesting
        return None
    return _accepted(data, max_candidates)


def _fast_msgpack(body: bytes, max_candidates: int) -> RankRequest | None:
    """``_fast_path`` for a MessagePack body: the same struct, and what JSON cannot hold sent on."""
    if may_hold_non_finite(body):
        return None
    try:
        data = _MSGPACK_DECODER.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if holds_nul(body, data):
        return None
    return _accepted(data, max_candidates)


def _accepted(data: RankRequestBody, max_candidates: int) -> RankRequest | None:
    """The request of a decoded body when the checks types cannot express pass; else None."""
    candidates = data.candidates
    n = len(candidates)
    if n > max_candidates:
        return None
    app_ids: list[str] = list(map(_APP_ID, candidates))
    if len(set(app_ids)) != n:  # the hashes computed here are cached in the strings, for the encoder
        return None
    raw_bids = list(map(_BID, candidates))
    bids = None
    if raw_bids.count(None) != n:
        bids = np.array(raw_bids, dtype=np.float64)
        if ((bids < 0) | np.isinf(bids)).any():
            return None
    return RankRequest(
        user_id=data.user_id,
        user=data.user,
        context=data.context,
        app_ids=app_ids,
        features=list(map(_FEATURES, candidates)),
        bids=bids,
        objective=data.objective,
        top_k=data.top_k,
        experiment=data.experiment,
    )


def _slow_path(body: bytes, max_candidates: int) -> RankRequest:
    return _checked(load_json(body), max_candidates, "must be a JSON object")


def _slow_msgpack(body: bytes, max_candidates: int) -> RankRequest:
    return _checked(load_msgpack(body), max_candidates, "must be a MessagePack map")


def _checked(data: Any, max_candidates: int, not_an_object: str) -> RankRequest:
    """The request of a parsed document, every rule checked; the first broken one raised."""
    if type(data) is not dict:
        raise RequestError.at(("body",), not_an_object, "type_error")
    candidates = _candidates(data, max_candidates)
    app_ids = _app_ids(candidates)
    return RankRequest(
        user_id=_identifier(data.get("user_id"), ("body", "user_id"), required=True) or "",
        user=_object(data.get("user"), ("body", "user")),
        context=_object(data.get("context"), ("body", "context")),
        app_ids=app_ids,
        features=_features(candidates),
        bids=_bids(candidates),
        objective=_objective(data.get("objective")),
        top_k=_top_k(data.get("top_k")),
        experiment=_identifier(data.get("experiment"), ("body", "experiment"), required=False),
    )


def _column(candidates: list[dict[str, Any]], key: str) -> list[Any]:
    """``[c.get(key) for c in candidates]``, looped in C."""
    return list(map(dict.get, candidates, repeat(key)))


def _identifier(value: Any, loc: Loc, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise RequestError.at(loc, "field required", "missing")
        return None
    if type(value) is not str:
        raise RequestError.at(loc, "must be a string", "string_type")
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise RequestError.at(loc, f"must have 1 to {MAX_ID_LENGTH} characters", "string_length")
    return value


def _object(value: Any, loc: Loc) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise RequestError.at(loc, "must be an object of feature values", "dict_type")
    return value


def _candidates(data: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    loc: Loc = ("body", "candidates")
    candidates = data.get("candidates")
    if candidates is None:
        raise RequestError.at(loc, "field required", "missing")
    if type(candidates) is not list:
        raise RequestError.at(loc, "must be a list of candidates", "list_type")
    if not candidates:
        raise RequestError.at(loc, "must hold at least 1 candidate", "too_short")
    if len(candidates) > limit:
        raise RequestError.at(loc, f"holds {len(candidates)} candidates, the limit is {limit}", "too_long")
    if set(map(type, candidates)) != {dict}:
        first = next(i for i, c in enumerate(candidates) if type(c) is not dict)
        raise RequestError.at((*loc, first), "must be an object", "dict_type")
    return candidates


def _app_ids(candidates: list[dict[str, Any]]) -> list[str]:
    raw = _column(candidates, "app_id")
    if set(map(type, raw)) != {str}:
        first = next(i for i, a in enumerate(raw) if type(a) is not str)
        missing = raw[first] is None
        msg, kind = ("field required", "missing") if missing else ("must be a string", "string_type")
        raise RequestError.at(("body", "candidates", first, "app_id"), msg, kind)
    app_ids = cast(list[str], raw)
    lengths = list(map(len, app_ids))
    if min(lengths) == 0 or max(lengths) > MAX_ID_LENGTH:
        first = next(i for i, n in enumerate(lengths) if not 0 < n <= MAX_ID_LENGTH)
        loc: Loc = ("body", "candidates", first, "app_id")
        raise RequestError.at(loc, f"must have 1 to {MAX_ID_LENGTH} characters", "string_length")
    if len(set(app_ids)) != len(app_ids):
        seen: dict[str, int] = {}
        for index, app_id in enumerate(app_ids):
            if app_id in seen:
                msg = f"duplicate app_id {app_id!r} (also candidate {seen[app_id]})"
                raise RequestError.at(("body", "candidates", index, "app_id"), msg, "duplicate")
            seen[app_id] = index
    return app_ids


def _features(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    features = _column(candidates, "features")
    kinds = set(map(type, features))
    if kinds == {dict}:
        return features
    if kinds <= {dict, _NONE}:
        return [{} if f is None else f for f in features]
    first = next(i for i, f in enumerate(features) if type(f) not in (dict, _NONE))
    raise RequestError.at(("body", "candidates", first, "features"), "must be an object", "dict_type")


def _bids(candidates: list[dict[str, Any]]) -> npt.NDArray[np.float64] | None:
    bids = _column(candidates, "bid")
    kinds = set(map(type, bids))
    if kinds == {_NONE}:
        return None
    if not kinds <= {int, float, _NONE}:
        first = next(i for i, b in enumerate(bids) if type(b) not in (int, float, _NONE))
        raise RequestError.at(("body", "candidates", first, "bid"), "must be a number", "float_type")
    try:
        values = np.array(bids, dtype=np.float64)
    except OverflowError:
        values = np.array(
            [math.inf if b is not None and abs(b) > 1e308 else b for b in bids], dtype=np.float64
        )
    bad = np.flatnonzero((values < 0) | np.isinf(values))
    if bad.size:
        first = int(bad[0])
        raise RequestError.at(
            ("body", "candidates", first, "bid"), "must be a finite number >= 0", "greater_than_equal"
        )
    return values


def _objective(value: Any) -> Objective | None:
    if value is None:
        return None
    objective = _OBJECTIVES.get(value) if type(value) is str else None
    if objective is None:
        allowed = ", ".join(repr(o) for o in _OBJECTIVES)
        raise RequestError.at(("body", "objective"), f"must be one of {allowed}", "enum")
    return objective


def _top_k(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise RequestError.at(("body", "top_k"), "must be an integer", "int_type")
    if value < 1:
        raise RequestError.at(("body", "top_k"), "must be >= 1", "greater_than_equal")
    return value
