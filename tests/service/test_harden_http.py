"""Issue 16, the HTTP and input half: hostile ids, values and admin bodies on both stores.

Each test names its case of the issue. Every app here runs on SQLite and on the real PostgreSQL (its
own table prefix in the session's schema), so both stores are held to the same answers.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.app import create_app
from service.rank.served import MAX_LOGGED_CHARS
from service.settings import ServiceSettings
from tests.service.bundles import item_features
from tests.service.conftest import ADMIN, TOKENS, fifty_fifty, rank_body
from tests.service.test_events_support import StoreTarget

pytest_plugins = ["tests.service.test_events_support"]

JSON = {"content-type": "application/json"}
ODD_NAMES = ["a%00b", "a%00", "%00"]


@pytest.fixture
def api(target: StoreTarget, models_dir: Path) -> Iterator[TestClient]:
    """The whole service on the test's store (SQLite file or PostgreSQL with its own prefix)."""
    settings = ServiceSettings(
        models_dir=models_dir,
        database_url=target.url,
        table_prefix=target.prefix,
        admin_token=TOKENS,
        sync_interval_s=0.1,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def detail(response: Any) -> dict[str, Any]:
    first: dict[str, Any] = response.json()["detail"][0]
    return first


def test_auth_comes_before_validation_and_models_hide_paths(api: TestClient, models_dir: Path) -> None:
    """Case 14: an unauthenticated malformed PUT is a 401 (a wrong token a 403), never a 422 with
    validation detail; GET /models names bundles but not where they lie on the server's disk."""
    for body in (b"{not json", b'{"arms": 1}', orjson.dumps(fifty_fifty())):
        response = api.put("/experiments/x", content=body, headers=JSON)
        assert response.status_code == 401, response.text
        assert detail(response)["loc"] == ["header", "authorization"]
        wrong = api.put("/experiments/x", content=body, headers={**JSON, "Authorization": "Bearer no"})
        assert wrong.status_code == 403, wrong.text
    assert api.put("/experiments/x", content=b"{not json", headers={**JSON, **ADMIN}).status_code == 400
    assert api.put("/experiments/x", json=fifty_fifty(), headers=ADMIN).status_code == 201
    models = api.get("/models")
    assert [m["name"] for m in models.json()] == ["lr", "lr2"]
    assert all("path" not in m for m in models.json())
    assert str(models_dir) not in models.text


def test_names_no_experiment_can_have_are_not_found(api: TestClient) -> None:
    """Case 10: GET, DELETE, audit and report of a name holding a NUL answer 404 on both stores (the
    PostgreSQL store answered 500 DataError)."""
    assert api.put("/experiments/exp", json=fifty_fifty(), headers=ADMIN).status_code == 201
    for name in ODD_NAMES:
        for method, path in [
            ("GET", f"/experiments/{name}"),
            ("GET", f"/experiments/{name}/audit"),
            ("GET", f"/experiments/{name}/report"),
            ("DELETE", f"/experiments/{name}"),
        ]:
            response = api.request(method, path, headers=ADMIN)
            assert response.status_code == 404, (method, path, response.text)
            assert detail(response)["loc"] == ["path", "name"]
    assert api.get("/experiments/exp").status_code == 200  # the store is still fine


VALID_ARMS = '[{"name":"a","model":"lr","weight":50},{"name":"b","model":"lr2","weight":50}]'
HOSTILE_SPECS: list[tuple[bytes, list[Any]]] = [
    (b'{"arms":[{"name":"a","model":"lr","weight":NaN}],"control":"a"}', ["body", "arms", 0, "weight"]),
    (b'{"arms":[{"name":"a","model":"lr","weight":Infinity}],"control":"a"}', ["body", "arms", 0, "weight"]),
    (b'{"arms":[{"name":"a","model":"lr","weight":-Infinity}],"control":"a"}', ["body", "arms", 0, "weight"]),
    (b'{"arms":[{"name":"a","model":"lr","weight":1e400}],"control":"a"}', ["body", "arms", 0, "weight"]),
    (b'{"arms":' + VALID_ARMS.encode() + b',"control":"a","coverage":NaN}', ["body", "coverage"]),
    (b'{"arms":' + VALID_ARMS.encode() + b',"control":"a","salt":"\\ud800"}', ["body", "salt"]),
    (b'{"arms":' + VALID_ARMS.encode() + b',"control":"a","salt":"s\\u0000"}', ["body", "salt"]),
    (b'{"arms":' + VALID_ARMS.encode() + b',"control":"\\udc00x"}', ["body", "control"]),
    (b'{"arms":' + VALID_ARMS.encode() + b',"control":"a","\\ud800":1}', ["body", "\\ud800"]),
    (b'{"arms":[{"name":"a","model":"l\\u0000r","weight":100}],"control":"a"}', ["body", "arms", 0, "model"]),
]


@pytest.mark.parametrize(("body", "loc"), HOSTILE_SPECS, ids=[str(i) for i in range(len(HOSTILE_SPECS))])
def test_hostile_numbers_and_strings_in_admin_bodies_are_located(
    api: TestClient, body: bytes, loc: list[Any]
) -> None:
    """Case 9: NaN, Infinity, 1e400, a lone surrogate or a NUL anywhere in a PUT body: 422 naming the
    field, and nothing stored (PostgreSQL refused the NUL salt with a 500)."""
    response = api.put("/experiments/x", content=body, headers={**JSON, **ADMIN})
    assert response.status_code == 422, response.text
    assert detail(response)["loc"] == loc
    assert api.get("/experiments/x").status_code == 404
    assert api.post("/rank", json=rank_body(3)).status_code == 200


UNSTORABLE_RANKS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"user_id": "bad\x00user"}, ["body", "user_id"]),
    ({"user_id": "bad\ud800user"}, ["body", "user_id"]),
    ({"experiment": "e\x00"}, ["body", "experiment"]),
    ({"context": {"daytime": "morning\x00"}}, ["body", "context", "daytime"]),
    ({"user": {"unknown": ["x", "\udc00"]}}, ["body", "user", "unknown", 1]),
]


@pytest.mark.parametrize(
    ("change", "loc"), UNSTORABLE_RANKS, ids=[str(i) for i in range(len(UNSTORABLE_RANKS))]
)
def test_rank_refuses_what_no_store_can_hold(api: TestClient, change: dict[str, Any], loc: list[Any]) -> None:
    """Case 2 (/rank): a NUL or a lone surrogate in an id or a feature value is a 422 naming the field on
    both stores (PostgreSQL answered 200, then lost the whole served-list batch)."""
    body = rank_body(3)
    body.update(change)
    response = api.post("/rank", content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == 422, response.text
    assert detail(response)["loc"] == loc
    assert detail(response)["type"] == "string_unstorable"
    candidate = rank_body(3)
    candidate["candidates"][1]["app_id"] = "a\x001"
    response = api.post("/rank", content=json.dumps(candidate).encode(), headers=JSON)
    assert detail(response)["loc"] == ["body", "candidates", 1, "app_id"]


def test_events_refuse_what_no_store_can_hold_and_keep_the_rest(api: TestClient) -> None:
    """Case 2 (/events): a NUL or a lone surrogate in any id refuses that event alone, naming the field;
    the good events of its batch are stored on both stores (PostgreSQL answered 503 for the batch)."""
    ranked = api.post("/rank", json=rank_body(4)).json()
    request_id, user = ranked["request_id"], "3"
    apps = [item["app_id"] for item in ranked["items"]]

    def impression(event_id: str, app_id: str, **change: str) -> dict[str, str]:
        return {
            "event_id": event_id,
            "type": "impression",
            "request_id": request_id,
            "app_id": app_id,
            "user_id": user,
            **change,
        }

    events = [
        impression("good-1", apps[0]),
        impression("bad\x00id", apps[1]),
        impression("bad-user", apps[1], user_id="3\ud800"),
        impression(
            "bad-app",
            "a\x00",
        ),
        impression("bad-request", apps[1], request_id=request_id + "\udfff"),
        impression("good-2", apps[1]),
    ]
    body = json.dumps({"events": events}).encode()  # ensure_ascii: \u0000 and \ud800 escapes
    response = api.post("/events", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    refused = {(r["field"], r["code"]) for r in answer["rejected"]}
    assert refused == {
        ("events[1].event_id", "string_unstorable"),
        ("events[2].user_id", "string_unstorable"),
        ("events[3].app_id", "string_unstorable"),
        ("events[4].request_id", "string_unstorable"),
    }
    again = api.post("/events", content=body, headers=JSON).json()
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    huge = {**impression("x", apps[2]), "event_id": 10**300}  # an integer id is held to 256 digits too
    refused = api.post("/events", content=json.dumps({"events": [huge]}).encode(), headers=JSON)
    assert refused.status_code == 422 and refused.json()["rejected"][0]["field"] == "events[0].event_id"


def test_head_answers_wherever_get_does(client: TestClient) -> None:
    """Case 12: HEAD /healthz and HEAD /metrics answer 200 without a body (they answered 405)."""
    for path in ("/healthz", "/metrics", "/readyz", "/models"):
        response = client.head(path)
        assert response.status_code == 200, (path, response.text)
        assert response.content == b""
        assert response.headers["content-length"] == str(len(client.get(path).content)) or path == "/metrics"
    assert client.head("/rank").status_code == 405


def test_gzip_bodies_are_decoded_within_the_limit(settings: ServiceSettings) -> None:
    """Case 12: a gzip body is decoded (it was read as bytes: "not valid UTF-8"); one that inflates
    past APPRANK_MAX_BODY_BYTES (a gzip bomb) is a 413; other encodings are 415; bad gzip is 400."""
    limited = settings.model_copy(update={"max_body_bytes": 64 * 1024})
    with TestClient(create_app(limited)) as client:
        gz = {**JSON, "content-encoding": "gzip"}
        plain = orjson.dumps(rank_body(5))
        response = client.post("/rank", content=gzip.compress(plain), headers=gz)
        assert response.status_code == 200, response.text
        assert [i["app_id"] for i in response.json()["items"]] == [
            i["app_id"] for i in client.post("/rank", content=plain, headers=JSON).json()["items"]
        ]
        bomb = gzip.compress(b"{" + b" " * (40 * 1024 * 1024) + b"}")  # 40 MiB of JSON whitespace
        assert len(bomb) < 64 * 1024
        response = client.post("/rank", content=bomb, headers=gz)
        assert response.status_code == 413 and "decompressed" in detail(response)["msg"]
        assert client.post("/events", content=bomb, headers=gz).status_code == 413
        response = client.post("/rank", content=plain, headers={**JSON, "content-encoding": "br"})
        assert response.status_code == 415 and detail(response)["loc"] == ["header", "content-encoding"]
        response = client.post("/rank", content=plain[:20], headers=gz)
        assert response.status_code == 400 and detail(response)["type"] == "gzip_invalid"
        cut = gzip.compress(plain)[:-12]
        assert client.post("/rank", content=cut, headers=gz).status_code == 400


def test_rank_and_events_take_json_only(client: TestClient) -> None:
    """Case 12: another Content-Type than JSON on /rank and /events is a 415 (any was accepted); none
    at all is read as JSON (hand-written clients often send none); ``+json`` and a charset are fine."""
    plain = orjson.dumps(rank_body(3))
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        for path in ("/rank", "/events"):
            response = client.post(path, content=plain, headers={"content-type": media})
            assert response.status_code == 415, (path, media, response.text)
            assert detail(response)["loc"] == ["header", "content-type"]
    for media in ("application/json; charset=utf-8", "application/vnd.apprank+json", "APPLICATION/JSON"):
        assert client.post("/rank", content=plain, headers={"content-type": media}).status_code == 200
    request = client.build_request("POST", "/rank", content=plain)
    assert "content-type" not in request.headers  # httpx sets none for raw content
    assert client.send(request).status_code == 200


def cut_count(reason: str) -> float:
    return REGISTRY.get_sample_value("apprank_served_values_cut_total", {"reason": reason}) or 0.0


def test_only_schema_fields_are_logged_and_values_are_capped(api: TestClient) -> None:
    """Case 6: a served list logs only the serving model's schema fields, each value cut to
    MAX_LOGGED_CHARS, and counts what it drops or cuts (unknown keys were logged verbatim)."""
    body = rank_body(4)
    long_field = next(iter(item_features(0)))
    body["candidates"][0]["features"].update({"junk": "j" * 50_000, long_field: "v" * 50_000})
    body["context"]["junk"] = ["k" * 100] * 1000
    body["user"] = {"junk": {"deep": "x" * 50_000}}
    dropped, cut = cut_count("unknown_field"), cut_count("too_long")
    ranked = api.post("/rank", json=body)
    assert ranked.status_code == 200, ranked.text
    log = api.app.state.service.event_log  # type: ignore[attr-defined]
    assert log.writer.flush(10)
    with log.store.db.read() as cursor:
        prefix = log.store.prefix
        cursor.execute(f"SELECT user_json, context_json FROM {prefix}served_lists")
        user_json, context_json = cursor.fetchone()
        cursor.execute(
            f"SELECT i.app_id, f.features_json FROM {prefix}served_items AS i "
            f"JOIN {prefix}item_features AS f ON f.feature_id = i.feature_id"
        )
        items = {app_id: orjson.loads(text) for app_id, text in cursor.fetchall()}
    assert orjson.loads(user_json) == {}
    assert orjson.loads(context_json) == rank_body(4)["context"]
    assert items["a0"] == {**item_features(0), long_field: "v" * MAX_LOGGED_CHARS}
    assert items["a1"] == item_features(1)
    assert (cut_count("unknown_field") - dropped, cut_count("too_long") - cut) == (3, 1)
