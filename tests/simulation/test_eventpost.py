"""``EventPoster``: batching, and the switch to the server's clock when simulated times are refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from simulation.eventpost import EventPoster, EventTime

Posted = list[list[dict[str, Any]]]
REASON = "event time precedes the served list"


def _service(posted: Posted) -> httpx.MockTransport:
    """Accepts events without ``ts`` or with ts >= 1000; refuses older times as the service does."""

    def handle(request: httpx.Request) -> httpx.Response:
        events = orjson.loads(request.content)["events"]
        posted.append(events)
        too_old = [i for i, event in enumerate(events) if event.get("ts", 1000) < 1000]
        rejected = [
            {"index": i, "field": f"events[{i}].ts", "code": "ts_before_served", "reason": REASON}
            for i in too_old
        ]
        body = {"accepted": len(events) - len(rejected), "duplicates": 0, "rejected": rejected}
        return httpx.Response(200 if len(rejected) < len(events) else 422, json=body)

    return httpx.MockTransport(handle)


def _events(n: int, ts: float) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"e{i}",
            "type": "impression",
            "request_id": "r",
            "app_id": "a",
            "user_id": "u",
            "ts": ts,
        }
        for i in range(n)
    ]


async def _post(mode: EventTime, events: list[dict[str, Any]], posted: Posted) -> EventPoster:
    async with httpx.AsyncClient(transport=_service(posted), base_url="http://sim") as client:
        poster = EventPoster(client, batch_size=4, mode=mode)
        await poster.add(events)
        await poster.flush()
        return poster


def test_auto_falls_back_to_the_server_clock_and_resends_the_refused_events() -> None:
    posted: Posted = []
    poster = asyncio.run(_post(EventTime.AUTO, _events(6, 500.0), posted))
    assert poster.mode is EventTime.SERVER and poster.stats.fallback == REASON
    assert poster.stats.accepted == 6 and not poster.stats.rejected
    assert [len(batch) for batch in posted] == [4, 4, 2]  # the first batch, its resend, the rest
    assert all("ts" not in event for batch in posted[1:] for event in batch)


def test_simulated_times_are_kept_when_accepted_and_counted_when_refused() -> None:
    posted: Posted = []
    poster = asyncio.run(_post(EventTime.AUTO, _events(5, 2000.0), posted))
    assert poster.mode is EventTime.AUTO and poster.stats.accepted == 5
    assert all(event["ts"] == 2000.0 for batch in posted for event in batch)
    refused = asyncio.run(_post(EventTime.SIMULATED, _events(3, 500.0), []))
    assert refused.stats.accepted == 0 and refused.stats.rejected == {"ts_before_served": 3}
