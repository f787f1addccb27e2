"""The served-list writer: /rank's ``ServedListSink``, flushing to the event store off the request path.

``submit`` costs a length check and a deque append (no lock, no wake-up): it never blocks, and when the
queue is full the served list is dropped and counted. A background thread wakes every
``flush_interval_s`` (or as soon as a full batch is waiting), takes everything queued and writes it in
one transaction, so a served list reaches the store within a flush interval and a write.

A failed write is not the end of a list: the client already holds its ``request_id``. When the database
fails (``service.db.is_transient``: unreachable, unwritable, locked), the batch goes back to the front
of the queue and is retried with a growing pause, for up to ``retry_horizon_s`` after each list was
served; the queue's bounds still hold, so during an outage new lists are dropped (and counted) once it
is full. When the data fail instead (a value the database cannot store), the batch is written again one
list per transaction, so that only the bad list is dropped. Every list finally dropped is counted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from service.db import is_transient
from service.events.counters import EventCounters
from service.events.store import EventStore
from service.rank.served import ServedList

log = logging.getLogger(__name__)


class ServedListLog(Protocol):
    """What the event log needs of a served-list writer, in a thread (``ServedListWriter``) or in a
    process of its own (``service.events.process_writer.ProcessWriter``)."""

    retry_horizon_s: float

    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def failing(self) -> bool: ...
    def start(self) -> None: ...
    def submit(self, served: ServedList) -> None: ...
    def queue_depth(self) -> int: ...
    def is_pending(self, request_ids: Iterable[str]) -> bool: ...
    def flush(self, timeout_s: float = 5.0) -> bool: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


class ServedListWriter:
    """A bounded queue of served lists and the thread that writes them in batches.

    Args:
        store: where the lists go.
        counters: dropped-list and queue-depth metrics.
        max_queue: queued lists beyond this are dropped (and counted).
        max_queued_candidates: likewise for the candidates the queued lists hold (a list keeps its
            request's whole candidate list alive until written: this bounds the memory).
        flush_interval_s: the longest a list waits in the queue before its batch is written.
        max_batch: a batch of this many lists wakes the thread early; also the most written at once.
        nice: niceness added to the writer thread (Linux), so that when cores are busy the request
            handlers get the CPU first and the log waits.
        retry_horizon_s: how long after it was served a list is still retried when the database fails.
        max_retry_pause_s: the longest pause between two attempts while the database fails.
    """

    def __init__(
        self,
        store: EventStore,
        counters: EventCounters,
        *,
        max_queue: int = 20_000,
        max_queued_candidates: int = 500_000,
        flush_interval_s: float = 0.05,
        max_batch: int = 1_000,
        nice: int = 10,
        retry_horizon_s: float = 60.0,
        max_retry_pause_s: float = 1.0,
    ) -> None:
        self._store = store
        self._counters = counters
        self._max_queue = max_queue
        self._max_candidates = max_queued_candidates
        # candidates queued = submitted - written; each counter has a single writing thread
        self._candidates_in = 0
        self._candidates_out = 0
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._nice = nice
        self.retry_horizon_s = retry_horizon_s
        self._max_pause = max_retry_pause_s
        self._pause = 0.0  # the current pause between attempts; 0 while writes succeed
        self._retry_at = 0.0  # monotonic time of the next attempt while failing
        self._queue: deque[ServedList] = deque()
        self._pending_ids: set[str] = set()  # request_ids queued or being written
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._writing = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the background writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="served-list-writer", daemon=True)
            self._thread.start()

    def submit(self, served: ServedList) -> None:
        """Queue a served list; drops it (and counts the drop) when the queue is full. Never blocks."""
        candidates = len(served.app_ids)
        if (
            self._stopping
            or len(self._queue) >= self._max_queue
            or self._candidates_in - self._candidates_out + candidates > self._max_candidates
        ):
            self.dropped += 1
            self._counters.served_list_dropped()
            return
        self._candidates_in += candidates
        self._pending_ids.add(served.request_id)
        self._queue.append(served)
        if len(self._queue) == self._max_batch:
            self._wake.set()

    def queue_depth(self) -> int:
        """Served lists waiting to be written."""
        return len(self._queue)

    def is_pending(self, request_ids: Iterable[str]) -> bool:
        """True when one of these requests' served lists is queued or being written right now."""
        pending = self._pending_ids
        return any(request_id in pending for request_id in request_ids)

    @property
    def failing(self) -> bool:
        """True while the last write attempt failed on the database (the queue waits to be retried)."""
        return self._pause > 0

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Block until everything queued so far is written; False if that took longer than the timeout,
        or at once while the database fails (the lists stay queued for their retries)."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        with self._idle:
            while (self._queue or self._writing) and not self.failing:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._idle.wait(min(remaining, 0.05))
            return not (self._queue or self._writing)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting lists, write everything queued, and stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error(
                    "served-list writer did not stop within %.1f s; %d lists unwritten",
                    timeout_s,
                    len(self._queue),
                )
            self._thread = None
        if self._queue:  # never started, or the thread died: write what is left from here
            self._write_all(final=True)

    def _run(self) -> None:
        self._lower_priority()
        try:
            self._store.prepare_writer_thread()
        except Exception:
            log.exception("preparing the served-list writer's connection failed")
        while True:
            wait = self._interval
            if self.failing:
                wait = min(wait, max(0.0, self._retry_at - time.monotonic())) if self._queue else wait
            self._wake.wait(wait)
            self._wake.clear()
            stopping = self._stopping
            self._write_all(final=stopping)
            if stopping:
                return

    def _lower_priority(self) -> None:
        """Renice this thread only (on Linux a thread id is a valid PRIO_PROCESS target)."""
        if self._nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self._nice)
        except OSError as error:
            log.debug("cannot lower the served-list writer's priority: %s", error)

    def _write_all(self, final: bool = False) -> None:
        """Write the queue in batches of at most ``max_batch`` (see the module's doc for failures).

        While the database fails, nothing is attempted before the pause is over; ``final`` (shutdown)
        makes one attempt and drops what still fails.
        """
        while self._queue:
            if self.failing and not final and time.monotonic() < self._retry_at:
                break
            with self._idle:
                self._writing = True
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._counters.served_queue_depth(len(self._queue))
            retry: list[ServedList] = []
            try:
                retry = self._write_batch(batch)
                if retry and final:
                    log.error("the database fails at shutdown: %d served lists dropped", len(retry))
                    self._drop(len(retry))
                    retry = []
            finally:
                self._settle(batch, retry)
            if retry:
                break
        self._counters.served_queue_depth(len(self._queue))

    def _write_batch(self, batch: list[ServedList]) -> list[ServedList]:
        """Write ``batch``; returns the lists to retry later (the database failed), in order."""
        try:
            self._store.write_served(batch)
        except Exception as error:
            if is_transient(error):
                self._failed(error, len(batch))
                return batch
            log.warning("writing %d served lists failed (%s); writing them one by one", len(batch), error)
            return self._write_one_by_one(batch)
        self.written += len(batch)
        self._pause = 0.0
        return []

    def _write_one_by_one(self, batch: list[ServedList]) -> list[ServedList]:
        """Each list in its own transaction: one the store refuses is dropped, the others are written."""
        for position, served in enumerate(batch):
            try:
                self._store.write_served([served])
            except Exception as error:
                if is_transient(error):
                    self._failed(error, len(batch) - position)
                    return batch[position:]
                log.error("served list %r refused by the store (%s); dropped", served.request_id, error)
                self._drop(1)
                continue
            self.written += 1
        self._pause = 0.0
        return []

    def _failed(self, error: BaseException, lists: int) -> None:
        """Note a failure of the database: pause (doubling up to the maximum) before the next attempt."""
        self._pause = min(self._max_pause, max(self._interval, 2 * self._pause))
        self._retry_at = time.monotonic() + self._pause
        self._counters.served_list_retried(lists)
        log.warning("writing %d served lists failed (%s); retrying in %.2f s", lists, error, self._pause)

    def _settle(self, batch: list[ServedList], retry: list[ServedList]) -> None:
        """Put ``retry`` back at the front of the queue (minus the lists past the horizon); release
        the rest of ``batch`` (written or dropped)."""
        horizon = time.time() - self.retry_horizon_s
        kept = [served for served in retry if served.ts >= horizon]
        if expired := len(retry) - len(kept):
            log.error("%d served lists retried for %.0f s; dropped", expired, self.retry_horizon_s)
            self._drop(expired)
        self._queue.extendleft(reversed(kept))
        kept_ids = {served.request_id for served in kept}
        for served in batch:
            if served.request_id not in kept_ids:
                self._pending_ids.discard(served.request_id)
                self._candidates_out += len(served.app_ids)
        with self._idle:
            self._writing = False
            self._idle.notify_all()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._counters.served_list_dropped(count)
