"""``POST /rank`` with MessagePack bodies and answers: the same ranking as JSON, the same checks, the same
error shape, and ``Accept`` negotiation (MessagePack when asked, JSON by default, 406 when neither).

The differential tests run real frappe_ctr rows (an LR bundle with random weights on an encoder fitted
on the real training rows, so nearly every app scores differently) through both encodings; the parser
tests compare the two decoders on generated documents (the strategies of ``test_payload_paths``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.fitting import fit_encoder
from model.schema import FeatureSchema, Source
from service.app import create_app
from service.errors import RequestError
from service.rank.media import Wire, answer_wire
from service.rank.payload import RankRequest, _fast_msgpack, parse_rank_request
from service.settings import ServiceSettings
from tests.service.bundles import FRAPPE_SCHEMA, random_weights, write_lr_bundle
from tests.service.test_payload_paths import BODY, LIMIT, same

MSGPACK = {"content-type": "application/msgpack"}
ANSWER_MSGPACK = {**MSGPACK, "accept": "application/msgpack"}
pack = msgspec.msgpack.encode


def read_rows(path: Path, limit: int) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [row for _, row in zip(range(limit), csv.DictReader(handle), strict=False)]


@pytest.fixture(scope="module")
def frappe(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """A models directory (LR over an encoder fitted on 20,000 real training rows) and real test rows."""
    schema = FeatureSchema.load(FRAPPE_SCHEMA)
    train = read_rows(data_dir / "frappe_ctr" / "train.csv", 20_000)
    encoder = fit_encoder(schema, {name: np.array([row[name] for row in train]) for name in schema.names})
    models = tmp_path_factory.mktemp("msgpack") / "models"
    write_lr_bundle(models / "lr", encoder, random_weights(encoder, seed=3))
    return models, read_rows(data_dir / "frappe_ctr" / "test.csv", 20_000)


@pytest.fixture(scope="module")
def client(frappe: tuple[Path, list[dict[str, str]]]) -> Iterator[TestClient]:
    models, _ = frappe
    url = f"sqlite:///{models.parent / 'apprank.db'}"
    with TestClient(create_app(ServiceSettings(models_dir=models, database_url=url))) as test_client:
        yield test_client


def real_body(rows: list[dict[str, str]], n: int, skip: int = 0, **extra: Any) -> dict[str, Any]:
    """One user and context (row ``skip``), N distinct apps with their features, bids on every other."""
    schema = FeatureSchema.load(FRAPPE_SCHEMA)
    items = [f.name for f in schema.by_source(Source.ITEM) if f.name != "item"]
    seen: dict[str, dict[str, Any]] = {}
    for row in rows[skip:]:
        if row["item"] not in seen:
            bid = None if len(seen) % 2 else 0.5 + len(seen) % 5
            seen[row["item"]] = {"app_id": row["item"], "bid": bid, "features": {k: row[k] for k in items}}
        if len(seen) == n:
            break
    first = rows[skip]
    body = {
        "user_id": first["user"],
        "context": {f.name: first[f.name] for f in schema.by_source(Source.CONTEXT)},
        "candidates": list(seen.values()),
        **extra,
    }
    return body


def ranked(answer: dict[str, Any]) -> list[tuple[str, float, float, int]]:
    return [(i["app_id"], i["ctr"], i["score"], i["position"]) for i in answer["items"]]


@pytest.mark.parametrize(("n", "extra"), [(100, {}), (1000, {"top_k": 10}), (300, {"objective": "ctr_bid"})])
def test_msgpack_and_json_rank_real_rows_the_same(
    client: TestClient, frappe: tuple[Path, list[dict[str, str]]], n: int, extra: dict[str, Any]
) -> None:
    """Same candidates as JSON and as MessagePack: same order, CTRs and scores, in both answer encodings."""
    _, rows = frappe
    body = real_body(rows, n, skip=n, **extra)
    if extra.get("objective") == "ctr_bid":
        for candidate in body["candidates"]:
            candidate["bid"] = candidate["bid"] or 1.25
    as_json = client.post("/rank", content=orjson.dumps(body))
    as_msgpack = client.post("/rank", content=pack(body), headers=MSGPACK)
    both = client.post("/rank", content=pack(body), headers=ANSWER_MSGPACK)
    assert as_json.status_code == as_msgpack.status_code == both.status_code == 200, both.text
    assert as_msgpack.headers["content-type"] == "application/json"
    assert both.headers["content-type"] == "application/msgpack"
    assert both.headers["vary"] == "accept"
    decoded = msgspec.msgpack.decode(both.content)
    expected = ranked(as_json.json())
    assert len(expected) == extra.get("top_k", n)
    assert len({ctr for _, ctr, _, _ in expected}) > len(expected) // 2  # the scores tell apps apart
    assert ranked(as_msgpack.json()) == expected
    assert ranked(decoded) == expected
    assert {k: v for k, v in decoded.items() if k not in ("items", "request_id")} == {
        k: v for k, v in as_json.json().items() if k not in ("items", "request_id")
    }


def test_typical_msgpack_bodies_take_the_fast_path(frappe: tuple[Path, list[dict[str, str]]]) -> None:
    _, rows = frappe
    body = real_body(rows, 200, top_k=5, experiment="default")
    fast = _fast_msgpack(pack(body), 1000)
    assert fast is not None
    same(fast, parse_rank_request(orjson.dumps(body), 1000))


def outcome(parse: Any) -> tuple[str, Any]:
    try:
        request: RankRequest = parse()
    except RequestError as error:
        return "error", (error.status, [(i.loc, i.type) for i in error.issues])
    return "ok", request


def packable(document: Any) -> bytes | None:
    try:
        return pack(document)
    except (TypeError, OverflowError, UnicodeEncodeError, msgspec.EncodeError):
        return None  # ints past 64 bits, lone surrogates: no MessagePack twin


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_msgpack_parses_every_document_as_its_json_twin_does(document: dict[str, Any]) -> None:
    """Accepted alike and read the same, or refused alike: same status, field and type of error."""
    packed = packable(document)
    if packed is None:
        return
    text = json.dumps(document, allow_nan=True).encode()
    kind, got = outcome(lambda: parse_rank_request(packed, LIMIT, msgpack=True))
    want_kind, want = outcome(lambda: parse_rank_request(text, LIMIT))
    assert kind == want_kind, (got, want)
    if kind == "ok":
        same(got, want)
    else:
        assert got == want


@settings(max_examples=500, deadline=None)
@given(BODY, st.data())
def test_damaged_msgpack_is_a_4xx_never_a_crash(document: dict[str, Any], data: st.DataObject) -> None:
    packed = bytearray(packable(document) or b"\x80")
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(packed)))
        packed[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    kind, got = outcome(lambda: parse_rank_request(bytes(packed), LIMIT, msgpack=True))
    if kind == "error":
        assert got[0] in (400, 422)


GOOD = {"user_id": "u", "candidates": [{"app_id": "a", "features": {"cost": "free"}}]}


def with_candidate(**fields: Any) -> dict[str, Any]:
    return {"user_id": "u", "candidates": [{"app_id": "a", **fields}]}


@pytest.mark.parametrize(
    ("content", "status", "loc", "kind"),
    [
        (b"\xc1", 400, ["body"], "msgpack_invalid"),  # a byte MessagePack never uses
        (pack(GOOD)[:-3], 400, ["body"], "msgpack_invalid"),  # cut short
        (pack(GOOD) + b"\x00", 400, ["body"], "msgpack_invalid"),  # trailing bytes
        (b"\x81\xa7user_id\xa2\xff\xfe", 400, ["body"], "msgpack_invalid"),  # invalid UTF-8
        (pack([GOOD]), 422, ["body"], "type_error"),
        (pack({"candidates": []}), 422, ["body", "candidates"], "too_short"),
        (pack(with_candidate(bid=float("nan"))), 422, ["body", "candidates", 0, "bid"], "finite_number"),
        (pack(with_candidate(bid=float("-inf"))), 422, ["body", "candidates", 0, "bid"], "finite_number"),
        (
            pack(with_candidate(features={"rating": float("inf")})),
            422,
            ["body", "candidates", 0, "features", "rating"],
            "finite_number",
        ),
        (
            pack(with_candidate(features={"cost": b"free"})),
            422,
            ["body", "candidates", 0, "features", "cost"],
            "msgpack_type",
        ),
        (
            pack(with_candidate(features={"cost": msgspec.msgpack.Ext(3, b"x")})),
            422,
            ["body", "candidates", 0, "features", "cost"],
            "msgpack_type",
        ),
        (
            pack(with_candidate(features={7: "x"})),
            422,
            ["body", "candidates", 0, "features", "7"],
            "msgpack_key",
        ),
        (pack({**GOOD, "user_id": "u\x00"}), 422, ["body", "user_id"], "string_unstorable"),
        (
            pack(with_candidate(features={"genres": ["x", "\x00"]})),
            422,
            ["body", "candidates", 0, "features", "genres", 1],
            "string_unstorable",
        ),
        # with a bid (a float: zero bytes in the body), every place a string can hold a NUL
        (
            pack(with_candidate(bid=1.0, features={"rating": 4.5, "cost": "x\x00"})),
            422,
            ["body", "candidates", 0, "features", "cost"],
            "string_unstorable",
        ),
        (
            pack({**with_candidate(bid=1.0), "context": {"country": "\x00"}}),
            422,
            ["body", "context", "country"],
            "string_unstorable",
        ),
        (
            pack({"user_id": "u", "candidates": [{"app_id": "a\x00", "bid": 2.0}]}),
            422,
            ["body", "candidates", 0, "app_id"],
            "string_unstorable",
        ),  # fmt: skip
        (
            pack({**with_candidate(bid=1.0), "experiment": "e\x00"}),
            422,
            ["body", "experiment"],
            "string_unstorable",
        ),  # fmt: skip
        (pack({**GOOD, "user_id": 5}), 422, ["body", "user_id"], "string_type"),
        (pack({**GOOD, "top_k": 0}), 422, ["body", "top_k"], "greater_than_equal"),
        (pack({**GOOD, "objective": "best"}), 422, ["body", "objective"], "enum"),
        (
            pack({"user_id": "u", "candidates": [{"app_id": "a"}, {"app_id": "a"}]}),
            422,
            ["body", "candidates", 1, "app_id"],
            "duplicate",
        ),  # fmt: skip
    ],
)
def test_bad_msgpack_bodies_are_4xx_naming_the_field(
    client: TestClient, content: bytes, status: int, loc: list[Any], kind: str
) -> None:
    response = client.post("/rank", content=content, headers=ANSWER_MSGPACK)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"  # errors are JSON, whatever Accept says
    assert response.json()["detail"][0]["loc"] == loc
    assert response.json()["detail"][0]["type"] == kind


def test_a_backslash_before_u0000_is_no_nul_in_msgpack_either() -> None:
    request = parse_rank_request(pack({**GOOD, "user_id": "u\\u0000"}), LIMIT, msgpack=True)
    assert request.user_id == "u\\u0000"
    assert _fast_msgpack(pack({**GOOD, "user_id": "u\\u0000"}), LIMIT) is not None


def test_oversize_and_overlong_msgpack_bodies(
    client: TestClient, frappe: tuple[Path, list[dict[str, str]]]
) -> None:
    _, rows = frappe
    huge = pack({**GOOD, "pad": "x" * (4 * 1024 * 1024)})
    response = client.post("/rank", content=huge, headers=MSGPACK)
    assert response.status_code == 413 and response.json()["detail"][0]["loc"] == ["body"]
    body = real_body(rows, 2001)
    too_many = client.post("/rank", content=pack(body), headers=MSGPACK)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["type"] == "too_long"


def test_other_media_types_stay_415_and_events_take_json_only(client: TestClient) -> None:
    response = client.post("/rank", content=pack(GOOD), headers={"content-type": "application/cbor"})
    assert response.status_code == 415
    assert "application/msgpack" in response.json()["detail"][0]["msg"]
    events = client.post("/events", content=pack({"events": []}), headers=MSGPACK)
    assert events.status_code == 415 and events.json()["detail"][0]["loc"] == ["header", "content-type"]
    for media in ("application/x-msgpack", "application/vnd.msgpack", "Application/MsgPack; v=1"):
        assert client.post("/rank", content=pack(GOOD), headers={"content-type": media}).status_code == 200


@pytest.mark.parametrize(
    ("accept", "wire"),
    [
        (None, Wire.JSON),
        ("*/*", Wire.JSON),
        ("application/json", Wire.JSON),
        ("application/msgpack", Wire.MSGPACK),
        ("application/x-msgpack", Wire.MSGPACK),
        ("application/msgpack, application/json", Wire.MSGPACK),
        ("application/json, application/msgpack;q=0.5", Wire.JSON),
        ("application/json;q=0.5, application/msgpack", Wire.MSGPACK),
        ("text/html,application/xhtml+xml,*/*;q=0.8", Wire.JSON),
        ("application/*", Wire.JSON),
        ("application/msgpack;q=0, */*", Wire.JSON),
        ("application/json;q=0, */*", Wire.MSGPACK),
        ("application/msgpack;q=oops", Wire.MSGPACK),
    ],
)
def test_accept_picks_the_answer(accept: str | None, wire: Wire) -> None:
    assert answer_wire(None if accept is None else accept.encode()) is wire


@pytest.mark.parametrize("accept", ["text/html", "application/json;q=0", "image/*", "application/cbor"])
def test_an_accept_that_allows_neither_is_a_406(client: TestClient, accept: str) -> None:
    response = client.post("/rank", content=orjson.dumps(GOOD), headers={"accept": accept})
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"][0]["loc"] == ["header", "accept"]
    assert response.json()["detail"][0]["type"] == "not_acceptable"


def test_openapi_documents_both_media_types(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/rank"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "application/msgpack"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "application/msgpack"}
    assert "406" in operation["responses"]
