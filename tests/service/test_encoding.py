"""RequestEncoder gives exactly what the bundle's FeatureEncoder gives on the broadcast raw rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from model.encoder import FeatureEncoder
from model.fitting import fit_encoder
from model.schema import FeatureSchema, Source
from service.errors import RequestError
from service.rank.encoding import RequestEncoder
from service.rank.payload import parse_rank_request

SCHEMA = FeatureSchema.model_validate(
    {
        "name": "mixed",
        "user_id_field": "user",
        "item_id_field": "item",
        "fields": [
            {"name": "user", "kind": "categorical", "source": "user"},
            {"name": "age", "kind": "numeric", "source": "user", "transform": "standardize"},
            {"name": "tags", "kind": "multi", "source": "user", "max_len": 3},
            {"name": "hour", "kind": "hashed", "source": "context", "num_buckets": 50},
            {"name": "item", "kind": "categorical", "source": "item"},
            {"name": "size", "kind": "categorical", "source": "item"},
            {"name": "price", "kind": "numeric", "source": "item", "transform": "log"},
            {
                "name": "rating",
                "kind": "numeric",
                "source": "item",
                "transform": "quantile_bucket",
                "num_buckets": 4,
            },
            {"name": "genres", "kind": "multi", "source": "item", "max_len": 2},
        ],
    }
)


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    rows = 60
    columns = {
        "user": np.array([str(i % 7) for i in range(rows)]),
        "age": np.array([20.0 + i % 30 for i in range(rows)]),
        "tags": np.array(["a|b", "c", "a|d|e"] * 20),
        "hour": np.array([str(i % 24) for i in range(rows)]),
        "item": np.array([f"i{i % 12}" for i in range(rows)]),
        "size": np.array(["5", "10", "4.8", "true"] * 15),
        "price": np.array([0.99 * (i % 5) for i in range(rows)]),
        "rating": np.array([1.0 + (i % 9) / 2 for i in range(rows)]),
        "genres": np.array(["x|y", "y", "z|x"] * 20),
    }
    return fit_encoder(SCHEMA, columns)


def request(candidates: list[dict[str, Any]], user: dict[str, Any], context: dict[str, Any]) -> Any:
    body = {"user_id": "3", "user": user, "context": context, "candidates": candidates}
    return parse_rank_request(orjson.dumps(body), 100)


def test_matches_encoder_transform_on_mixed_values(encoder: FeatureEncoder) -> None:
    items: list[dict[str, Any]] = [
        {"size": 5, "price": 1.5, "rating": 3, "genres": ["x", "q"]},
        {"size": "10", "price": "2.5", "rating": None, "genres": "y|z|x"},
        {"size": 4.8, "price": None, "genres": None},
        {"size": True, "item": "i3"},
        {"size": "unknown", "price": 1e6, "rating": 100},
        {"size": None, "item": None},
        {"size": 10.0},
        {},
    ]
    candidates = [{"app_id": f"i{k}", "features": f} for k, f in enumerate(items)]
    user = {"age": 31, "tags": ["a", "zz", "e", "b"]}
    context = {"hour": 7}
    encoded = RequestEncoder(encoder).encode(request(candidates, user, context))
    n = len(items)
    raw: dict[str, Any] = {
        "user": ["3"] * n,
        "age": [31] * n,
        "tags": [user["tags"]] * n,
        "hour": [7] * n,
        "item": [f.get("item", c["app_id"]) for f, c in zip(items, candidates, strict=True)],
    }
    for name in ("size", "price", "rating", "genres"):
        raw[name] = [f.get(name) for f in items]
    columns = {name: np.fromiter(values, dtype=object, count=n) for name, values in raw.items()}
    expected = encoder.transform(columns, n)
    assert set(encoded) == set(expected)
    for name, array in expected.items():
        assert encoded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(encoded[name], array, err_msg=name)


def test_counts_missing_and_oov(encoder: FeatureEncoder) -> None:
    request_encoder = RequestEncoder(encoder)
    candidates = [{"app_id": "i1", "features": {"size": "nope"}}, {"app_id": "zzz", "features": {}}]
    request_encoder.encode(request(candidates, {}, {}))
    counts = request_encoder.stats.pending()  # the accumulator before its flush
    assert counts["size"] == (2, 1, 1)  # values, missing, oov
    assert counts["item"] == (2, 0, 1)
    assert counts["user"] == (1, 0, 0)  # user fields count once per request


@pytest.mark.parametrize(
    ("features", "loc", "message"),
    [
        ({"price": "cheap"}, ["body", "candidates", 1, "features", "price"], "not a number: 'cheap'"),
        ({"size": {"a": 1}}, ["body", "candidates", 1, "features", "size"], "must be a string, number"),
        ({"price": [1]}, ["body", "candidates", 1, "features", "price"], "must be a string, number"),
        (
            {"genres": [{"a": 1}]},
            ["body", "candidates", 1, "features", "genres"],
            "must be a scalar or a list",
        ),
    ],
)
def test_bad_item_values_name_the_candidate(
    encoder: FeatureEncoder, features: dict[str, Any], loc: list[Any], message: str
) -> None:
    candidates = [{"app_id": "i1", "features": {}}, {"app_id": "i2", "features": features}]
    with pytest.raises(RequestError) as raised:
        RequestEncoder(encoder).encode(request(candidates, {}, {}))
    issue = raised.value.issues[0]
    assert list(issue.loc) == loc and message in issue.msg


def test_bad_user_value_names_the_user_field(encoder: FeatureEncoder) -> None:
    with pytest.raises(RequestError) as raised:
        RequestEncoder(encoder).encode(request([{"app_id": "i1"}], {"age": "old"}, {}))
    assert list(raised.value.issues[0].loc) == ["body", "user", "age"]


def expected_inputs(encoder: FeatureEncoder, body_candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """``encoder.transform`` on the raw columns of candidates with no user or context features."""
    n = len(body_candidates)
    raw: dict[str, list[Any]] = {"user": ["3"] * n}
    for spec in SCHEMA.by_source(Source.ITEM):
        default = [c["app_id"] if spec.name == "item" else None for c in body_candidates]
        raw[spec.name] = [
            (c.get("features") or {}).get(spec.name, d) for c, d in zip(body_candidates, default, strict=True)
        ]
    columns = {name: np.fromiter(values, dtype=object, count=n) for name, values in raw.items()}
    return encoder.transform(columns, n)


def assert_same_inputs(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(actual) == set(expected)
    for name, array in expected.items():
        assert actual[name].dtype == array.dtype, name
        np.testing.assert_array_equal(actual[name], array, err_msg=name)


def test_item_cache_gives_the_encoders_inputs_on_hits_misses_and_changes(encoder: FeatureEncoder) -> None:
    cached = RequestEncoder(encoder, item_cache_size=100)
    first: list[dict[str, Any]] = [
        {"app_id": "i1", "features": {"size": "5", "price": 1.5, "rating": 3, "genres": "x|y"}},
        {"app_id": "i2", "features": {"size": "10", "price": True}},
        {"app_id": "i3", "features": {"size": 5}},  # a number in a token field: never cached
        {"app_id": "zz", "features": {"genres": ["y", "q"]}},  # a list in a token field: never cached
        {"app_id": "i4"},
        {"app_id": "i5", "features": {"size": True}},  # True == 1, but "true" and "1" are other tokens
    ]
    for _ in range(2):
        assert_same_inputs(cached.encode(request(first, {}, {})), expected_inputs(encoder, first))
    assert cached.item_cache is not None and len(cached.item_cache) == 3  # i1, i2, i4
    assert (cached.item_cache.hits, cached.item_cache.misses) == (3, 9)
    changed = [
        {"app_id": "i4", "features": {"size": "4.8"}},  # features changed: a miss, the row replaced
        {"app_id": "i2", "features": {"size": "10", "price": 1}},  # 1 == True: a hit, and 1.0 either way
        # a key outside the schema: a miss, never cached (issue 16: the cache keeps the dicts it gets)
        {"app_id": "i1", "features": {"size": "5", "price": 1.5, "rating": 3, "genres": "x|y", "new": 1}},
        {"app_id": "i9", "features": {"size": "true", "item": "i3"}},
        {"app_id": "i5", "features": {"size": 1}},
    ]
    for _ in range(2):
        assert_same_inputs(cached.encode(request(changed, {}, {})), expected_inputs(encoder, changed))
    assert len(cached.item_cache) == 4
    assert (cached.item_cache.hits, cached.item_cache.misses) == (3 + 1 + 3, 9 + 4 + 2)


def test_item_cache_is_bounded(encoder: FeatureEncoder) -> None:
    cached = RequestEncoder(encoder, item_cache_size=3)
    apps = [{"app_id": f"i{k}", "features": {"size": str(k), "price": k}} for k in range(8)]
    for start, size in ((0, 3), (2, 3), (5, 3), (1, 6), (0, 3), (0, 2)):  # (1, 6): more than it holds
        window = apps[start : start + size]
        assert_same_inputs(cached.encode(request(window, {}, {})), expected_inputs(encoder, window))
        assert cached.item_cache is not None and len(cached.item_cache) <= 3


@pytest.mark.parametrize(
    ("features", "loc", "message"),
    [
        ({"price": "cheap"}, ["body", "candidates", 2, "features", "price"], "not a number: 'cheap'"),
        ({"size": {"a": 1}}, ["body", "candidates", 2, "features", "size"], "must be a string, number"),
        ({"size": "7", "genres": [[1]]}, ["body", "candidates", 2, "features", "genres"], "must be a scalar"),
    ],
)
def test_item_cache_misses_name_their_candidate(
    encoder: FeatureEncoder, features: dict[str, Any], loc: list[Any], message: str
) -> None:
    cached = RequestEncoder(encoder, item_cache_size=100)
    known = [{"app_id": "i1", "features": {"size": "5"}}, {"app_id": "i2", "features": {}}]
    cached.encode(request(known, {}, {}))
    with pytest.raises(RequestError) as raised:
        cached.encode(request([*known, {"app_id": "i3", "features": features}], {}, {}))
    issue = raised.value.issues[0]
    assert list(issue.loc) == loc and message in issue.msg


def test_item_cache_keeps_the_feature_counts(encoder: FeatureEncoder) -> None:
    candidates = [{"app_id": "i1", "features": {"size": "nope"}}, {"app_id": "zzz", "features": {}}]
    plain, cached = RequestEncoder(encoder), RequestEncoder(encoder, item_cache_size=100)
    for _ in range(3):
        plain.encode(request(candidates, {}, {}))
        cached.encode(request(candidates, {}, {}))
    assert cached.item_cache is not None and cached.item_cache.hits == 4
    assert cached.stats.pending() == plain.stats.pending()
    assert plain.stats.pending()["size"] == (6, 3, 3)
