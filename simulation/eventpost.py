"""Posting a simulation's impressions and downloads to ``POST /events`` in batches.

Events carry the time of the simulated day (``ts``), so that the report's per-day breakdown shows the
simulated days. The service refuses event times more than its clock-skew allowance (300 s) before the
served list or after its own clock; with ``EventTime.AUTO`` the first such refusal switches the poster
to the server's clock (events without ``ts``), and the refused events are sent again that way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
TIME_CODES = frozenset({"ts_before_served", "ts_in_future"})
MAX_BATCH = 1000
RETRY_FOR_S = 90.0  # beyond the service's served-list retry horizon (60 s) and its slack


class EventTime(StrEnum):
    """Which time events carry: the simulated day's, the server's (no ``ts``), or the first that works."""

    AUTO = "auto"
    SIMULATED = "simulated"
    SERVER = "server"


class EventPostError(RuntimeError):
    """POST /events failed as a whole (not JSON, too large, store down...)."""


@dataclass
class PostStats:
    """What the service said about the posted events.

    Attributes:
        rejected: refused events by reason code; ``examples``: one reason per code.
        fallback: why the poster switched to the server's clock, when it did.
    """

    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None


class EventPoster:
    """Buffers events and posts them in batches of ``batch_size`` (call ``flush`` at the end)."""

    def __init__(self, client: httpx.AsyncClient, batch_size: int = 500, mode: EventTime = EventTime.AUTO):
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH}], got {batch_size}")
        self.client = client
        self.batch_size = batch_size
        self.mode = mode
        self.stats = PostStats()
        self._buffer: list[dict[str, Any]] = []

    async def add(self, events: list[dict[str, Any]]) -> None:
        """Queue ``events`` (each with its simulated ``ts``); post full batches."""
        self._buffer.extend(events)
        while len(self._buffer) >= self.batch_size:
            batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
            await self._post(batch)

    async def flush(self) -> None:
        """Post whatever is buffered."""
        while self._buffer:
            batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
            await self._post(batch)

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        sent = batch if self.mode is not EventTime.SERVER else [_without_ts(e) for e in batch]
        response = await self._send(orjson.dumps({"events": sent}))
        if response.status_code not in (200, 422):
            raise EventPostError(f"POST /events answered {response.status_code}: {response.text[:500]}")
        body = orjson.loads(response.content)
        if "accepted" not in body:
            raise EventPostError(f"POST /events answered {response.status_code}: {response.text[:500]}")
        self.stats.batches += 1
        self.stats.accepted += int(body["accepted"])
        self.stats.duplicates += int(body["duplicates"])
        retry = self._record_rejections(batch, body["rejected"])
        if retry:
            await self._post(retry)

    async def _send(self, content: bytes) -> httpx.Response:
        """POST the batch; a 503 with Retry-After (the store down for a while, or a served list not
        written yet) is sent again after the pause it asks for, for up to ``RETRY_FOR_S``."""
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            response = await self.client.post(
                "/events", content=content, headers={"content-type": "application/json"}
            )
            pause = response.headers.get("retry-after", "")
            if response.status_code != 503 or not pause.isdigit() or time.monotonic() > deadline:
                return response
            await asyncio.sleep(int(pause))

    def _record_rejections(self, batch: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> list[Any]:
        """Count refusals; returns the events to send again on the server's clock (AUTO mode)."""
        retry: list[dict[str, Any]] = []
        for rejection in rejected:
            code = str(rejection["code"])
            if code in TIME_CODES and self.mode is not EventTime.SIMULATED:
                if self.mode is EventTime.AUTO:
                    self.mode = EventTime.SERVER
                    self.stats.fallback = str(rejection["reason"])
                    log.warning("the service refuses simulated event times: %s", rejection["reason"])
                retry.append(batch[int(rejection["index"])])
                continue
            self.stats.rejected[code] += 1
            self.stats.examples.setdefault(code, str(rejection["reason"]))
        return retry


def _without_ts(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != "ts"}
