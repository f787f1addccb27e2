"""``EventLog``: the event log as one object the service starts and stops.

It owns the event store, the served-list writer (the ``ServedListSink`` that /rank submits to), the
group committer of POST /events, the counters, and a maintenance thread (retention purges, and the
distinct-users-per-arm gauge that Prometheus divides downloads by for CVR).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from service.db import Database
from service.events.committer import GroupCommitter
from service.events.counters import EventCounters
from service.events.models import BatchOutcome, EventIn, IngestResponse, Rejection
from service.events.process_writer import ProcessWriter
from service.events.store import SqlEventStore, open_event_store
from service.events.validation import CLOCK_SKEW_S, parse_batch
from service.events.writer import ServedListLog, ServedListWriter
from service.settings import DEFAULT_TABLE_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventLogConfig:
    """Tunables of the event log.

    Attributes:
        max_events_per_batch: a POST /events body with more events is refused (413).
        writer: ``process``: served lists are encoded on the request thread into a byte ring that a
            writer process stores (``ProcessWriter``: nothing shares the worker's GIL); ``thread``: a
            thread of this process builds and stores them (``ServedListWriter``).
        served_log_bytes: the process writer's ring: lists beyond it are dropped (and counted).
        served_queue_size: the thread writer's bound: lists waiting beyond this are dropped (counted).
        served_queue_candidates: likewise for the candidates those lists hold (bounds the memory).
        flush_interval_s: the served-list writer's longest wait before writing a batch.
        unknown_request_grace_s: how long events naming an unknown request_id are retried before they
            are refused; covers the writer latency of *other* workers or replicas (this process's own
            writer is flushed on demand).
        retention_days: when set, served lists and events older than this many days are purged every
            ``purge_interval_s``.
        users_refresh_s: how often ``apprank_experiment_users`` is recomputed from the store (only
            when the service defines that gauge; 0 turns it off).
        clock_skew_s: how far an event's own time may precede its served list or follow the server's
            clock before it is refused (widen it to accept back-dated events, e.g. in simulations).
        served_retry_horizon_s: how long after /rank a served list whose write fails on the database
            is retried; events naming a request_id minted less long ago (plus ``pending_slack_s``) that
            is not stored yet are answered 503 with Retry-After instead of ``unknown_request``. Every
            worker and replica must use the same value.
    """

    max_events_per_batch: int = 1_000
    writer: Literal["process", "thread"] = "process"
    served_log_bytes: int = 16 * 1024 * 1024
    served_queue_size: int = 20_000
    served_queue_candidates: int = 500_000
    flush_interval_s: float = 0.05
    unknown_request_grace_s: float = 0.3
    retention_days: int | None = None
    purge_interval_s: float = 3600.0
    users_refresh_s: float = 30.0
    clock_skew_s: float = CLOCK_SKEW_S
    served_retry_horizon_s: float = 60.0
    pending_slack_s: float = 5.0


class ServedListPendingError(Exception):
    """Events name served lists that may not be written yet (retry later); nothing else is wrong."""

    def __init__(self, rejections: list[Rejection]) -> None:
        super().__init__(f"{len(rejections)} events name served lists not stored yet")
        self.rejections = rejections


def minted_at(request_id: str) -> float | None:
    """When /rank minted ``request_id`` (unix seconds), or None for an id not of its making.

    ``service.rank.rank_service.new_request_id``: 12 hex digits of milliseconds, then 20 random ones.
    """
    if len(request_id) != 32:
        return None
    try:
        int(request_id, 16)
    except ValueError:
        return None
    return int(request_id[:12], 16) / 1000.0


class EventLog:
    """Store + writer + committer + maintenance. Call ``start()`` at startup and ``close()`` at shutdown.

    Args:
        db: the database (shared with other stores or not; see ``owns_db``).
        config: tunables.
        counters: the counters and the metrics they forward to (default: in-memory only).
        owns_db: close ``db`` in ``close()``.
        prefix: table prefix (the service's ``table_prefix`` setting).
    """

    def __init__(
        self,
        db: Database,
        config: EventLogConfig | None = None,
        *,
        counters: EventCounters | None = None,
        owns_db: bool = False,
        prefix: str = DEFAULT_TABLE_PREFIX,
    ) -> None:
        self.db = db
        self.config = config or EventLogConfig()
        self.counters = counters if counters is not None else EventCounters()
        self.store: SqlEventStore = open_event_store(db, prefix, clock_skew_s=self.config.clock_skew_s)
        self.writer = self._writer(prefix)
        self.committer = GroupCommitter(self.store, self.writer)
        self._owns_db = owns_db
        self._stop_maintenance = threading.Event()
        self._maintenance: threading.Thread | None = None

    def _writer(self, prefix: str) -> ServedListLog:
        config = self.config
        if config.writer == "process":
            return ProcessWriter(
                self.db.url,
                self.store,
                self.counters,
                prefix=prefix,
                capacity_bytes=config.served_log_bytes,
                flush_interval_s=config.flush_interval_s,
                retry_horizon_s=config.served_retry_horizon_s,
            )
        return ServedListWriter(
            self.store,
            self.counters,
            max_queue=config.served_queue_size,
            max_queued_candidates=config.served_queue_candidates,
            flush_interval_s=config.flush_interval_s,
            retry_horizon_s=config.served_retry_horizon_s,
        )

    @classmethod
    def open(
        cls,
        url: str,
        config: EventLogConfig | None = None,
        *,
        counters: EventCounters | None = None,
        prefix: str = DEFAULT_TABLE_PREFIX,
    ) -> EventLog:
        """An event log on its own database connection(s) at ``url`` (closed by ``close()``)."""
        return cls(Database(url), config, counters=counters, owns_db=True, prefix=prefix)

    @property
    def sink(self) -> ServedListLog:
        """The ``ServedListSink`` to hand to /rank."""
        return self.writer

    def start(self) -> None:
        """Create the tables if needed and start the writer, committer and maintenance threads."""
        self.writer.start()  # first: the writer process starts up while the rest does
        self.store.migrate()
        self.committer.start()
        wants_users = self.config.users_refresh_s > 0 and self.counters.tracks_experiment_users
        if self.config.retention_days is not None or wants_users:
            self._maintenance = threading.Thread(target=self._maintain, name="event-maintenance", daemon=True)
            self._maintenance.start()

    def close(self) -> None:
        """Write every queued served list, commit every queued event batch, stop the threads."""
        self._stop_maintenance.set()
        self.writer.close()
        self.committer.close()
        if self._maintenance is not None:
            self._maintenance.join(5.0)
        if self._owns_db:
            self.db.close()

    async def ingest(self, body: bytes) -> tuple[int, IngestResponse]:
        """Handle a POST /events body: the HTTP status and the response.

        200 when at least one event was accepted or was a duplicate, 422 when every event was refused.

        Raises:
            BatchError: the body as a whole is unusable.
            ServedListPendingError: some events name served lists that may still be written: the
                batch is to be sent again later (what it stored is kept: the resend's duplicates).
            Exception: the store failed (nothing of this batch is acknowledged).
        """
        events, rejected = parse_batch(body, self.config.max_events_per_batch)
        outcome = BatchOutcome(rejected=rejected)
        outcome.merge(await self._commit_with_grace(events))
        self.counters.events_accepted(outcome.accepted_by_arm)
        pending = self._pending(events, outcome.rejected)
        if pending:
            raise ServedListPendingError(pending)
        outcome.rejected.sort(key=lambda rejection: rejection.index)
        self.counters.events_rejected(Counter(rejection.code for rejection in outcome.rejected))
        response = IngestResponse(
            accepted=outcome.accepted, duplicates=outcome.duplicates, rejected=outcome.rejected
        )
        status = 200 if outcome.accepted or outcome.duplicates else 422
        return status, response

    def _pending(self, events: list[EventIn], rejections: list[Rejection]) -> list[Rejection]:
        """The ``unknown_request`` rejections whose served list may still be written: queued or
        retried by this process's writer, or minted by /rank within the retry horizon (any worker)."""
        unknown = [r for r in rejections if r.code == "unknown_request"]
        if not unknown:
            return []
        request_ids = {event.index: event.request_id for event in events}
        now = time.time()
        horizon = self.config.served_retry_horizon_s + self.config.pending_slack_s
        pending = []
        for rejection in unknown:
            request_id = request_ids[rejection.index]
            minted = minted_at(request_id)
            recent = minted is not None and now - horizon <= minted <= now + self.config.clock_skew_s
            if recent or self.writer.is_pending([request_id]):
                pending.append(rejection)
        return pending

    async def _commit_with_grace(self, events: list[EventIn]) -> BatchOutcome:
        """Commit; events naming an unknown request are retried for a short grace period."""
        outcome = BatchOutcome()
        deadline = time.monotonic() + self.config.unknown_request_grace_s
        delay = 0.05
        while True:
            result = await self.committer.commit(events)
            unknown = {r.index for r in result.rejected if r.code == "unknown_request"}
            if not unknown or time.monotonic() + delay > deadline:
                outcome.merge(result)
                return outcome
            result.rejected = [r for r in result.rejected if r.code != "unknown_request"]
            outcome.merge(result)
            events = [event for event in events if event.index in unknown]
            await asyncio.sleep(delay)
            delay *= 2

    def _maintain(self) -> None:
        """Purge every ``purge_interval_s`` (with retention) and refresh the users gauge."""
        config = self.config
        next_purge = time.monotonic() if config.retention_days is not None else float("inf")
        next_users = (
            time.monotonic()
            if self.counters.tracks_experiment_users and config.users_refresh_s > 0
            else float("inf")
        )
        while not self._stop_maintenance.wait(
            min(3600.0, max(0.0, min(next_purge, next_users) - time.monotonic()))
        ):
            now = time.monotonic()
            try:
                if now >= next_purge and config.retention_days is not None:
                    next_purge = now + config.purge_interval_s
                    self.store.purge(config.retention_days)
                if now >= next_users:
                    next_users = now + config.users_refresh_s
                    self.counters.experiment_users(self.store.user_counts())
            except Exception:
                log.exception("event log maintenance failed")
