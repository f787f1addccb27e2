"""Every bad input of the issue gets a 4xx naming the field and the reason; the service keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.service.conftest import rank_body


@pytest.fixture
def small(settings: ServiceSettings) -> Iterator[TestClient]:
    """Limits small enough to hit: 5 candidates, 4 KiB bodies."""
    limited = settings.model_copy(update={"max_candidates": 5, "max_body_bytes": 4096})
    with TestClient(create_app(limited)) as client:
        yield client


def post_raw(client: TestClient, content: bytes) -> Any:
    return client.post("/rank", content=content, headers={"content-type": "application/json"})


def body_with(**changes: Any) -> dict[str, Any]:
    body = rank_body(3)
    body.update(changes)
    return body


def candidate_with(index: int, **changes: Any) -> dict[str, Any]:
    body = rank_body(3)
    body["candidates"][index].update(changes)
    return body


CASES: list[tuple[str, bytes, int, list[Any], str]] = [
    ("malformed JSON", b'{"user_id": "u", "candidates": [', 400, ["body"], "malformed JSON"),
    ("not UTF-8", b'{"user_id": "\xff"}', 400, ["body"], "malformed JSON"),
    ("empty body", b"", 400, ["body"], "malformed JSON"),
    ("not an object", b"[1, 2]", 422, ["body"], "must be a JSON object"),
    (
        "no user_id",
        orjson.dumps({"candidates": [{"app_id": "a"}]}),
        422,
        ["body", "user_id"],
        "field required",
    ),
    ("user_id a number", orjson.dumps(body_with(user_id=5)), 422, ["body", "user_id"], "must be a string"),
    ("user_id empty", orjson.dumps(body_with(user_id="")), 422, ["body", "user_id"], "1 to 256 characters"),
    ("user a list", orjson.dumps(body_with(user=[1])), 422, ["body", "user"], "must be an object"),
    ("context a string", orjson.dumps(body_with(context="x")), 422, ["body", "context"], "must be an object"),
    ("no candidates", orjson.dumps({"user_id": "u"}), 422, ["body", "candidates"], "field required"),
    (
        "candidates an object",
        orjson.dumps(body_with(candidates={})),
        422,
        ["body", "candidates"],
        "must be a list",
    ),
    ("empty candidates", orjson.dumps(body_with(candidates=[])), 422, ["body", "candidates"], "at least 1"),
    (
        "candidate a string",
        orjson.dumps(body_with(candidates=[{"app_id": "a"}, "b"])),
        422,
        ["body", "candidates", 1],
        "must be an object",
    ),
    (
        "no app_id",
        orjson.dumps(body_with(candidates=[{"app_id": "a"}, {}])),
        422,
        ["body", "candidates", 1, "app_id"],
        "field required",
    ),
    (
        "app_id a number",
        orjson.dumps(candidate_with(2, app_id=7)),
        422,
        ["body", "candidates", 2, "app_id"],
        "must be a string",
    ),
    (
        "duplicate app_ids",
        orjson.dumps(candidate_with(2, app_id="a0")),
        422,
        ["body", "candidates", 2, "app_id"],
        "duplicate app_id 'a0' (also candidate 0)",
    ),
    (
        "features a list",
        orjson.dumps(candidate_with(1, features=[1])),
        422,
        ["body", "candidates", 1, "features"],
        "must be an object",
    ),
    (
        "feature an object",
        orjson.dumps(candidate_with(1, features={"category": {"x": 1}})),
        422,
        ["body", "candidates", 1, "features", "category"],
        "must be a string, number, boolean or null",
    ),
    (
        "user feature a list",
        orjson.dumps(body_with(context={"daytime": ["a"]})),
        422,
        ["body", "context", "daytime"],
        "must be a string, number, boolean or null",
    ),
    (
        "bid a string",
        orjson.dumps(candidate_with(1, bid="1")),
        422,
        ["body", "candidates", 1, "bid"],
        "must be a number",
    ),
    (
        "bid a boolean",
        orjson.dumps(candidate_with(1, bid=True)),
        422,
        ["body", "candidates", 1, "bid"],
        "must be a number",
    ),
    (
        "negative bid",
        orjson.dumps(candidate_with(2, bid=-0.5)),
        422,
        ["body", "candidates", 2, "bid"],
        ">= 0",
    ),
    (
        "NaN bid",
        orjson.dumps(rank_body(3)).replace(b'"app_id":"a1"', b'"app_id":"a1","bid":NaN'),
        422,
        ["body", "candidates", 1, "bid"],
        "must be a finite number",
    ),
    (
        "Infinity bid",
        orjson.dumps(rank_body(3)).replace(b'"app_id":"a0"', b'"app_id":"a0","bid":Infinity'),
        422,
        ["body", "candidates", 0, "bid"],
        "must be a finite number",
    ),
    (
        "1e999 bid",
        orjson.dumps(rank_body(3)).replace(b'"app_id":"a2"', b'"app_id":"a2","bid":1e999'),
        422,
        ["body", "candidates", 2, "bid"],
        "must be a finite number",
    ),
    (
        "NaN feature",
        orjson.dumps(rank_body(3)).replace(b'"cost":"free"', b'"cost":-Infinity', 1),
        422,
        ["body", "candidates", 0, "features", "cost"],
        "must be a finite number",
    ),
    (
        "huge integer bid",
        orjson.dumps(rank_body(3)).replace(b'"app_id":"a2"', b'"app_id":"a2","bid":' + b"9" * 400),
        422,
        ["body", "candidates", 2, "bid"],
        "must be a finite number",
    ),
    (
        "unknown objective",
        orjson.dumps(body_with(objective="revenue")),
        422,
        ["body", "objective"],
        "must be one of 'ctr', 'ctr_bid'",
    ),
    (
        "objective a number",
        orjson.dumps(body_with(objective=1)),
        422,
        ["body", "objective"],
        "must be one of",
    ),
    (
        "ctr_bid without bids",
        orjson.dumps(body_with(objective="ctr_bid")),
        422,
        ["body", "candidates", 0, "bid"],
        "required when the objective is 'ctr_bid'",
    ),
    ("top_k zero", orjson.dumps(body_with(top_k=0)), 422, ["body", "top_k"], ">= 1"),
    ("top_k a float", orjson.dumps(body_with(top_k=2.5)), 422, ["body", "top_k"], "must be an integer"),
    ("top_k a boolean", orjson.dumps(body_with(top_k=True)), 422, ["body", "top_k"], "must be an integer"),
    (
        "unknown experiment",
        orjson.dumps(body_with(experiment="nope")),
        422,
        ["body", "experiment"],
        "unknown experiment 'nope' (known: none)",
    ),
    (
        "experiment a number",
        orjson.dumps(body_with(experiment=3)),
        422,
        ["body", "experiment"],
        "must be a string",
    ),
    (
        "lone surrogate",
        b'{"user_id": "\\ud800", "candidates": [{"app_id": "a"}]}',
        422,
        ["body", "user_id"],
        "lone surrogates",
    ),
    (
        "NUL in a feature value",
        b'{"user_id": "u", "candidates": [{"app_id": "a", "features": {"k": "a\\u0000"}}]}',
        422,
        ["body", "candidates", 0, "features", "k"],
        "NUL characters",
    ),
]


@pytest.mark.parametrize(("case", "content", "status", "loc", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_located_4xx(
    module_client: TestClient, case: str, content: bytes, status: int, loc: list[Any], message: str
) -> None:
    client = module_client  # one app takes every case in turn, and keeps serving after each
    response = post_raw(client, content)
    assert response.status_code == status, (case, response.text)
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"][0]
    assert detail["loc"] == loc, (case, detail)
    assert message in detail["msg"], (case, detail)
    assert client.post("/rank", json=rank_body(3)).status_code == 200  # still serving


def test_too_many_candidates(small: TestClient) -> None:
    response = small.post("/rank", json=rank_body(6))
    assert response.status_code == 422
    assert response.json()["detail"][0] == {
        "loc": ["body", "candidates"],
        "msg": "holds 6 candidates, the limit is 5",
        "type": "too_long",
    }


def test_default_candidate_limit_is_2000(client: TestClient) -> None:
    candidates = [{"app_id": f"a{i}"} for i in range(2001)]
    body = {"user_id": "u", "candidates": candidates}
    assert (
        client.post("/rank", json=body).json()["detail"][0]["msg"]
        == "holds 2001 candidates, the limit is 2000"
    )
    candidates.pop()
    assert client.post("/rank", json=body).status_code == 200


def test_oversized_body_by_content_length_and_chunked(small: TestClient) -> None:
    big = orjson.dumps({"user_id": "u", "candidates": [{"app_id": "a", "features": {"x": "y" * 5000}}]})
    response = post_raw(small, big)
    assert response.status_code == 413
    assert response.json()["detail"][0] == {
        "loc": ["body"],
        "msg": "body larger than 4096 bytes",
        "type": "body_too_large",
    }

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    chunked = small.post("/rank", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert small.post("/rank", json=rank_body(3)).status_code == 200


def test_rank_without_models_is_503(settings: ServiceSettings, tmp_path: Any) -> None:
    empty = settings.model_copy(update={"models_dir": tmp_path / "none"})
    with TestClient(create_app(empty)) as client:
        response = client.post("/rank", json=rank_body(2))
        assert response.status_code == 503
        unavailable = {"loc": [], "msg": "no model is loaded", "type": "unavailable"}
        assert response.json() == {"detail": [unavailable]}
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "no model loaded" in ready.json()["reasons"][0]
