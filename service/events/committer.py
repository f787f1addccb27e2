"""Group commit: one committer thread turns the event batches of many concurrent requests into one
transaction, then wakes each request with its own outcome.

Request handlers call ``await committer.commit(events)``; the batch joins a queue and the handler's
coroutine waits on a future without blocking the event loop. The thread takes everything queued
(while one transaction runs, the next group forms), checks and inserts it in one transaction with a
single commit (one fsync on SQLite), and resolves the futures: a 2xx is sent only after its events are
durable, and N concurrent requests cost one commit rather than N.

A group whose transaction fails on its data (``service.db.is_data_error``: a value the database cannot
store) is committed again one request at a time, and the request that still fails one event at a time:
the event the store refuses is rejected (``unstorable``), and no other request's events fail with it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from service.db import is_data_error
from service.events.models import BatchOutcome, EventIn, Rejection
from service.events.store import EventStore
from service.events.writer import ServedListLog

log = logging.getLogger(__name__)


class CommitterClosed(RuntimeError):
    """The committer is shut down; the events were not stored."""


@dataclass(frozen=True, slots=True)
class _Job:
    events: Sequence[EventIn]
    future: Future[BatchOutcome]


class GroupCommitter:
    """The committer thread and its queue.

    Args:
        store: where events go.
        writer: this process's served-list writer; when an event refers to a served list still in its
            queue, the writer is flushed first, so an event is never refused because of writer latency.
        max_group_events: a group stops growing beyond this many events (bounds a transaction's size).
    """

    def __init__(
        self, store: EventStore, writer: ServedListLog | None, *, max_group_events: int = 20_000
    ) -> None:
        self._store = store
        self._writer = writer
        self._max_group_events = max_group_events
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        self.batches = 0

    def start(self) -> None:
        """Start the committer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="event-committer", daemon=True)
            self._thread.start()

    def submit(self, events: Sequence[EventIn]) -> Future[BatchOutcome]:
        """Queue a batch; the future resolves once it is committed (or fails with the store's error)."""
        future: Future[BatchOutcome] = Future()
        if self._closed:
            future.set_exception(CommitterClosed("the event log is shutting down"))
        elif not events:
            future.set_result(BatchOutcome())
        else:
            self._queue.put(_Job(events, future))
        return future

    async def commit(self, events: Sequence[EventIn]) -> BatchOutcome:
        """Queue a batch and wait (asynchronously) until it is durable."""
        return await asyncio.wrap_future(self.submit(events))

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, then stop the thread; later batches fail with ``CommitterClosed``."""
        self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, stop = self._gather(first)
            self._commit_group(group)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus whatever else is queued right now (up to the size bound)."""
        group, size = [first], len(first.events)
        while size < self._max_group_events:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return group, True
            group.append(job)
            size += len(job.events)
        return group, False

    def _commit_group(self, group: list[_Job]) -> None:
        request_ids = {event.request_id for job in group for event in job.events}
        if self._writer is not None and self._writer.is_pending(request_ids):
            self._writer.flush()
        try:
            outcomes = self._store.record_events([job.events for job in group], time.time())
        except Exception as error:
            if not is_data_error(error):
                log.exception("committing %d event batches failed", len(group))
                for job in group:
                    _settle(job.future, error=error)
                return
            log.warning(
                "committing %d event batches failed on their data (%s): one by one", len(group), error
            )
            for job in group:
                self._commit_alone(job)
            return
        self.commits += 1
        self.batches += len(group)
        for job, outcome in zip(group, outcomes, strict=True):
            _settle(job.future, outcome=outcome)

    def _commit_alone(self, job: _Job) -> None:
        """Commit one request's batch in its own transaction, then event by event if its data fail."""
        try:
            (outcome,) = self._store.record_events([job.events], time.time())
        except Exception as error:
            if not is_data_error(error):
                _settle(job.future, error=error)
                return
            try:
                outcome = self._commit_each(job.events)
            except Exception as other:  # noqa: BLE001 - any other failure fails this request only
                _settle(job.future, error=other)
                return
        self.commits += 1
        self.batches += 1
        _settle(job.future, outcome=outcome)

    def _commit_each(self, events: Sequence[EventIn]) -> BatchOutcome:
        """One transaction per event; an event the store refuses on its data becomes a rejection."""
        outcome = BatchOutcome()
        for event in events:
            try:
                (alone,) = self._store.record_events([[event]], time.time())
            except Exception as error:
                if not is_data_error(error):
                    raise
                outcome.rejected.append(unstorable(event, error))
                continue
            outcome.merge(alone)
        return outcome


def unstorable(event: EventIn, error: BaseException) -> Rejection:
    """The rejection of an event whose values the database refuses."""
    reason = f"the event store cannot hold this event's values ({type(error).__name__}: {error})"
    return Rejection(
        index=event.index,
        event_id=event.event_id,
        field=f"events[{event.index}]",
        code="unstorable",
        reason=reason,
    )


def _settle(
    future: Future[BatchOutcome], *, outcome: BatchOutcome | None = None, error: Exception | None = None
) -> None:
    """Resolve a job's future unless its waiter gave up (the events stay committed: resending is harmless)."""
    try:
        if error is not None:
            future.set_exception(error)
        elif outcome is not None:
            future.set_result(outcome)
    except InvalidStateError:
        log.debug("a batch's waiter went away before its commit; the events are stored")
