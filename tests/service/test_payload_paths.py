"""The two /rank body parsers agree: what the fast path (msgspec) accepts, the slow path accepts and
reads the same way; what the slow path refuses, the fast path hands over to it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import RequestError
from service.rank.payload import RankRequest, _fast_path, _slow_path, parse_rank_request

LIMIT = 4
ODD_TEXT = st.sampled_from(["", "a", "ctr", "x" * 257, "\ud800", "é", "\x00", "1"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 1e308, 5e-324, 1.5]),
    st.text(max_size=4),
    ODD_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=5,
)
GOOD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)


def app_id_of(candidate: Any) -> str:
    """A key for ``unique_by``: the app_id as JSON (any candidate that is not an object is unique)."""
    return json.dumps(candidate.get("app_id")) if isinstance(candidate, dict) else str(id(candidate))


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else ``odd``: bodies the fast path takes, with the odd one out."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda k: good if k else odd)


FEATURES = mostly(
    st.dictionaries(
        st.sampled_from(["cost", "size", "genres", "k"]) | st.text(max_size=3),
        mostly(GOOD_SCALARS | st.lists(GOOD_SCALARS, max_size=3), SCALARS | VALUES),
        max_size=4,
    ),
    VALUES,
)
CANDIDATE = mostly(
    st.fixed_dictionaries(
        {"app_id": mostly(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), ODD_TEXT | VALUES)},
        optional={
            "bid": mostly(
                st.none() | st.floats(min_value=0, max_value=100) | st.integers(0, 99),
                st.sampled_from([-1, -0.5, -5e-324, True, "1"]) | SCALARS,
            ),
            "features": FEATURES,
            "extra": VALUES,
        },
    ),
    VALUES,
)
BODY = st.fixed_dictionaries(
    {
        "candidates": mostly(
            st.lists(CANDIDATE, min_size=1, max_size=LIMIT, unique_by=app_id_of), st.lists(CANDIDATE) | VALUES
        ),
        "user_id": mostly(st.sampled_from(["u1", "u2"]), ODD_TEXT | VALUES),
    },
    optional={
        "user": FEATURES,
        "context": FEATURES,
        "objective": mostly(st.sampled_from(["ctr", "ctr_bid"]), st.sampled_from(["CTR", ""]) | VALUES),
        "top_k": mostly(
            st.integers(min_value=1, max_value=9), st.sampled_from([0, -1, 2**63, 2**64, 1.0, True]) | VALUES
        ),
        "experiment": mostly(st.sampled_from(["default", "exp"]), ODD_TEXT | VALUES),
    },
)


def same(fast: RankRequest, slow: RankRequest) -> None:
    """Equal field by field, and of the same types (``repr`` tells 1 from 1.0 and True)."""
    for name in ("user_id", "user", "context", "app_ids", "features", "objective", "top_k", "experiment"):
        assert repr(getattr(fast, name)) == repr(getattr(slow, name)), name
    if slow.bids is None:
        assert fast.bids is None
    else:
        assert fast.bids is not None and fast.bids.dtype == slow.bids.dtype
        np.testing.assert_array_equal(fast.bids, slow.bids)


def check(body: bytes) -> RankRequest | None:
    fast = _fast_path(body, LIMIT)
    try:
        slow: RankRequest | None = _slow_path(body, LIMIT)
    except RequestError:
        slow = None
    if fast is not None:
        assert slow is not None, "the fast path accepted a body the slow path refuses"
        same(fast, slow)
    return fast


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_fast_path_never_disagrees_with_the_slow_path(body: dict[str, Any]) -> None:
    check(json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass"))
    check(json.dumps(body, allow_nan=True, ensure_ascii=True).encode())


@settings(max_examples=1000, deadline=None)
@given(BODY, st.data())
def test_fast_path_never_disagrees_on_damaged_bytes(body: dict[str, Any], data: st.DataObject) -> None:
    text = bytearray(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _dumpable(body) else b"{}")
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        text[at:at] = data.draw(st.binary(min_size=1, max_size=3) | INSERTS)
    check(bytes(text))


INSERTS = st.sampled_from(
    [b'"', b"1e400", b"\\ud800", b',"x":1', b',"x":1e400', b"NaN", b" ", b"{", b"]", b"\xc3"]
)


def _dumpable(body: dict[str, Any]) -> bool:
    try:
        orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@given(st.binary(max_size=64))
def test_fast_path_never_disagrees_on_any_bytes(body: bytes) -> None:
    check(body)


def test_deep_nesting_goes_to_the_slow_path() -> None:
    deep = b'{"user_id":"u","candidates":[{"app_id":"a","features":{"k":' + b"[" * 100_000 + b"]" * 100_000
    assert _fast_path(deep + b"}}]}", LIMIT) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id":"u","candidates":[{"app_id":"a","app_id":5}]}',
        b'{"user_id":"u","candidates":[{"app_id":5,"app_id":"a"}]}',
        b'{"user_id":"u","user_id":"v","candidates":[{"app_id":"a","features":{"k":1,"k":"2"}}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","bid":1e400}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","bid":-1e-400}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","bid":123456789012345678901234567890}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","features":{"k":123456789012345678901234567890}}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","features":{"k":18446744073709551615}}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","features":{"k":-9223372036854775809}}]}',
        b'{"user_id":"u","top_k":99999999999999999999999,"candidates":[{"app_id":"a"}]}',
        b'{"user_id":"u","user":{"k":123456789012345678901234567890},"candidates":[{"app_id":"a"}]}',
        b'{"user_id":"u","context":{"k":[1,{"a":2}]},"candidates":[{"app_id":"a"}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a"}]} x',
        b' {"user_id" : "u" , "candidates" : [ {"app_id" : "a"} ] } ',
        b'{"user_id":"u","candidates":[{"app_id":"\\ud800"}]}',
        b'{"user_id":"\xff","candidates":[{"app_id":"a"}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a\xc3"}]}',
        b'{"user_id":"u","candidates":[{"app_id":"a","features":null}],"user":null}',
        b'{"user_id":"u","candidates":[{"app_id":"a","bid":null},{"app_id":"b","bid":2}]}',
    ],
)
def test_fast_path_agrees_on_edge_cases(body: bytes) -> None:
    check(body)


def test_typical_bodies_take_the_fast_path() -> None:
    body = {
        "user_id": "u1",
        "user": {"age": 31},
        "context": {"hour": "7"},
        "candidates": [
            {"app_id": "a", "bid": 1.5, "features": {"cost": "free", "genres": ["x", "y"], "rating": 4}},
            {"app_id": "b", "features": {"cost": None}},
            {"app_id": "c"},
        ],
        "objective": "ctr_bid",
        "top_k": 2,
        "experiment": "default",
    }
    fast = check(orjson.dumps(body))
    assert fast is not None and fast.app_ids == ["a", "b", "c"] and fast.top_k == 2
    assert fast.bids is not None and fast.bids[0] == 1.5 and np.isnan(fast.bids[1:]).all()
    assert fast.features[2] == {} and fast.user == {"age": 31}
    same(parse_rank_request(orjson.dumps(body), LIMIT), fast)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"user_id":"bad\\u0000user","candidates":[{"app_id":"a"}]}', ("body", "user_id")),
        (
            b'{"user_id":"u","candidates":[{"app_id":"a"},{"app_id":"\\u0000"}]}',
            ("body", "candidates", 1, "app_id"),
        ),
        (
            b'{"user_id":"u","candidates":[{"app_id":"a","features":{"k":["x","\\u0000"]}}]}',
            ("body", "candidates", 0, "features", "k", 1),
        ),
        (
            b'{"user_id":"u","context":{"k\\u0000":1},"candidates":[{"app_id":"a"}]}',
            ("body", "context", "k\\x00"),
        ),
        (b'{"user_id":"u","user":{"k":"\\ud800"},"candidates":[{"app_id":"a"}]}', ("body", "user", "k")),
        (b'{"user_id":"u","experiment":"e\\udfff","candidates":[{"app_id":"a"}]}', ("body", "experiment")),
    ],
)
def test_strings_no_store_can_hold_are_refused_naming_the_field(body: bytes, loc: tuple[Any, ...]) -> None:
    """Issue 16, case 2: NUL characters and lone surrogates are refused with a 422 at their field; the
    fast path hands such bodies over (msgspec decodes a NUL) and the slow path names the field."""
    assert check(body) is None
    with pytest.raises(RequestError) as caught:
        _slow_path(body, LIMIT)
    assert caught.value.status == 422
    assert caught.value.issues[0].loc == loc
    assert caught.value.issues[0].type == "string_unstorable"


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    """Issue 16, case 2: the text ``\\u0000`` (an escaped backslash, then ``u0000``) is storable."""
    body = b'{"user_id":"u\\\\u0000","candidates":[{"app_id":"a"}]}'
    assert _slow_path(body, LIMIT).user_id == "u\\u0000"
