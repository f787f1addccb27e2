"""POST /events over HTTP on both stores: per-event rejections, batch errors, idempotency, durability
of what is acknowledged, the writer-latency race, and the counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import add_error_handlers, body_loc
from service.events.counters import EventCounters
from service.events.log import EventLog, EventLogConfig
from service.events.routes import events_router
from service.settings import ServiceSettings
from tests.service.test_events_support import StoreTarget, event, served_list

pytest_plugins = ["tests.service.test_events_support"]


def app_for(event_log: EventLog) -> FastAPI:
    app = FastAPI()
    add_error_handlers(app)
    app.include_router(events_router(lambda: event_log))
    return app


@pytest.fixture
def client(event_log: EventLog) -> Iterator[TestClient]:
    event_log.sink.submit(served_list("r1", app_ids=("a", "b", "c"), top_k=2))  # returns c and b
    event_log.sink.submit(served_list("r2", user_id="u2", app_ids=("a", "b"), arm="treatment"))
    with TestClient(app_for(event_log)) as test_client:
        yield test_client


def post(client: TestClient, events: list[Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/events", json={"events": events})
    return response.status_code, response.json()


def test_a_mixed_batch_keeps_the_valid_events(client: TestClient, event_log: EventLog) -> None:
    status, body = post(
        client,
        [
            event(1, app_id="b"),
            event(2, app_id="a"),  # scored but not returned
            event(3, "download", app_id="b"),
            event(4, request_id="r2", app_id="a", user_id="u2"),
            event(5, request_id="r2", app_id="a"),  # user u1 on u2's request
        ],
    )
    assert status == 200
    assert (body["accepted"], body["duplicates"]) == (3, 0)
    assert [(r["index"], r["event_id"], r["field"], r["code"]) for r in body["rejected"]] == [
        (1, "e2", "events[1].app_id", "unknown_item"),
        (4, "e5", "events[4].user_id", "user_mismatch"),
    ]
    assert body["rejected"][0]["reason"] == "app_id 'a' is not among the items returned for request 'r1'"
    counters = event_log.counters.snapshot()
    assert counters["events_rejected"] == {"unknown_item": 1, "user_mismatch": 1}
    assert counters["events_accepted"] == [
        {"experiment": "exp", "arm": "control", "type": "download", "count": 1},
        {"experiment": "exp", "arm": "control", "type": "impression", "count": 1},
        {"experiment": "exp", "arm": "treatment", "type": "impression", "count": 1},
    ]


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in event(0).items() if k != name}


def changed(**fields: Any) -> dict[str, Any]:
    return {**event(0, app_id="b"), **fields}


NON_EMPTY = "must be a non-empty string of at most 256 characters"
TYPES = "must be 'impression' or 'download', got "
UNIX = "must be a positive unix time in seconds, got "
NOT_RETURNED = "app_id 'zz' is not among the items returned for request 'r1'"


@pytest.mark.parametrize(
    ("raw", "field", "code", "reason"),
    [
        ("not an object", "events[0]", "invalid_event", "an event must be a JSON object"),
        (changed(event_id=None), "events[0].event_id", "missing_field", "is required"),
        (without("event_id"), "events[0].event_id", "missing_field", "is required"),
        (changed(event_id=""), "events[0].event_id", "invalid_field", NON_EMPTY),
        (changed(event_id="x" * 257), "events[0].event_id", "invalid_field", NON_EMPTY),
        (changed(request_id=["r1"]), "events[0].request_id", "invalid_field", "must be a string, got list"),
        (changed(app_id=True), "events[0].app_id", "invalid_field", "must be a string, got bool"),
        (without("user_id"), "events[0].user_id", "missing_field", "is required"),
        (changed(type="click"), "events[0].type", "unknown_type", TYPES + "'click'"),
        (without("type"), "events[0].type", "missing_field", TYPES + "None"),
        (changed(ts="yesterday"), "events[0].ts", "invalid_ts", UNIX + "'yesterday'"),
        (changed(ts=-5), "events[0].ts", "invalid_ts", UNIX + "-5"),
        (changed(ts=True), "events[0].ts", "invalid_ts", UNIX + "True"),
        (changed(ts=1.0), "events[0].ts", "ts_before_served", None),
        (changed(ts=time.time() + 86400), "events[0].ts", "ts_in_future", None),
        (
            changed(request_id="r404"),
            "events[0].request_id",
            "unknown_request",
            "no served list has request_id 'r404'",
        ),
        (changed(app_id="zz"), "events[0].app_id", "unknown_item", NOT_RETURNED),
        (
            changed(user_id="u9"),
            "events[0].user_id",
            "user_mismatch",
            "user_id 'u9' differs from the user of request 'r1'",
        ),
    ],
)
def test_every_kind_of_bad_event_is_refused_with_its_field_and_reason(
    client: TestClient, raw: Any, field: str, code: str, reason: str | None
) -> None:
    status, body = post(client, [raw])
    assert status == 422  # every event of the batch was refused
    (rejection,) = body["rejected"]
    assert (rejection["field"], rejection["code"]) == (field, code)
    if reason is not None:
        assert rejection["reason"] == reason
    assert (body["accepted"], body["duplicates"]) == (0, 0)
    assert body["detail"] == [{"loc": list(body_loc(field)), "msg": rejection["reason"], "type": code}]


@pytest.mark.parametrize(
    ("content", "status", "field", "reason"),
    [
        (b"{not json", 400, "body", None),
        (b"[]", 422, "events", "the body must be an object with an 'events' list"),
        (b'{"events": "e1"}', 422, "events", "the body must be an object with an 'events' list"),
        (b'{"events": []}', 422, "events", "must hold at least one event"),
        (orjson.dumps({"events": [event(i) for i in range(51)]}), 413, "events", "holds 51 events, more than the limit 50"),  # noqa: E501
    ],
)  # fmt: skip
def test_unusable_bodies_are_refused_as_a_whole(
    client: TestClient, content: bytes, status: int, field: str, reason: str | None
) -> None:
    response = client.post("/events", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    [detail] = response.json()["detail"]
    assert detail["loc"] == list(body_loc(field if field != "body" else ""))
    if reason is not None:
        assert detail["msg"] == reason


def test_resending_a_batch_is_harmless(client: TestClient, event_log: EventLog) -> None:
    batch = [event(1, app_id="b"), event(2, "download", app_id="b"), event(3, app_id="c")]
    assert post(client, batch) == (200, {"accepted": 3, "duplicates": 0, "rejected": []})
    assert post(client, batch) == (200, {"accepted": 0, "duplicates": 3, "rejected": []})
    overall = [r for r in event_log.store.arm_sums("exp", 0, 10**7) if r.day is None]
    assert [(r.impressions, r.downloads) for r in overall] == [(2, 1)]


def test_a_download_without_an_impression_is_accepted(client: TestClient) -> None:
    # events arrive out of order across batches and retries: the impression may come later
    assert post(client, [event(1, "download", app_id="b")]) == (
        200,
        {"accepted": 1, "duplicates": 0, "rejected": []},
    )
    assert post(client, [event(2, app_id="b")])[1]["accepted"] == 1


def test_an_event_for_a_list_still_in_the_writer_queue_is_accepted(target: StoreTarget) -> None:
    config = EventLogConfig(flush_interval_s=30.0, unknown_request_grace_s=0.0)
    log = EventLog.open(target.url, config, counters=EventCounters(), prefix=target.prefix)
    log.start()
    try:
        log.sink.submit(served_list("fresh"))
        assert log.writer.queue_depth() == 1  # the writer would wait 30 s: the events path flushes it
        with TestClient(app_for(log)) as client:
            assert post(client, [event(1, request_id="fresh")])[1]["accepted"] == 1
        assert log.writer.queue_depth() == 0
    finally:
        log.close()


def test_events_for_another_workers_pending_list_wait_for_its_flush(target: StoreTarget) -> None:
    """Two event logs on one database play two workers: the list is queued in A, the event posted to B."""
    worker_a = EventLog.open(
        target.url, EventLogConfig(flush_interval_s=0.2), counters=EventCounters(), prefix=target.prefix
    )
    patient = EventLogConfig(unknown_request_grace_s=10.0)  # covers A's writer process starting cold
    worker_b = EventLog.open(target.url, patient, counters=EventCounters(), prefix=target.prefix)
    worker_a.start()
    worker_b.start()
    try:
        worker_a.sink.submit(served_list("elsewhere"))
        with TestClient(app_for(worker_b)) as client:
            status, body = post(client, [event(1, request_id="elsewhere"), event(2, request_id="never")])
        assert status == 200 and body["accepted"] == 1
        assert [r["code"] for r in body["rejected"]] == ["unknown_request"]
    finally:
        worker_a.close()
        worker_b.close()


def test_concurrent_posts_share_commits_and_all_are_durable(client: TestClient, event_log: EventLog) -> None:
    for r in range(3, 43):
        event_log.sink.submit(served_list(f"r{r}"))

    async def load() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            posts = [
                http.post(
                    "/events",
                    json={
                        "events": [
                            event(r * 10 + i, request_id=f"r{r}", app_id=app) for i, app in enumerate("abc")
                        ]
                    },
                )
                for r in range(3, 43)
            ]
            return await asyncio.gather(*posts)

    commits_before = event_log.committer.commits
    responses = asyncio.run(load())
    assert [r.status_code for r in responses] == [200] * 40
    assert sum(r.json()["accepted"] for r in responses) == 120
    assert event_log.committer.commits - commits_before <= 40
    with event_log.store.db.read() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {event_log.store.prefix}events")
        assert cursor.fetchone()[0] == 120


def test_a_store_failure_is_a_503_and_nothing_is_acknowledged(
    client: TestClient, event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(event_log.store, "record_events", broken)
    response = client.post("/events", json={"events": [event(1, app_id="b")]})
    assert response.status_code == 503
    assert response.json() == {
        "detail": [{"loc": [], "msg": "event store unavailable: RuntimeError", "type": "unavailable"}]
    }


def test_without_an_event_log_the_routes_are_not_mounted(tmp_path: Path) -> None:
    settings = ServiceSettings(
        models_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'off.db'}", event_log=False
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/events", json={"events": [event(1)]})
        report = client.get("/experiments/exp/report")
    assert response.status_code == 404 and report.status_code == 404
    assert response.json() == {"detail": [{"loc": ["path"], "msg": "Not Found", "type": "not_found"}]}
