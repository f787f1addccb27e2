"""The served-list writer: /rank's ``ServedListSink``, flushing to the event store off the request path.

``submit`` costs a length check and a deque append (no lock, no wake-up): it never blocks, and when the
queue is full the served list is dropped and counted. A background thread wakes every
``flush_interval_s`` (or as soon as a full batch is waiting), takes everything queued and writes it in
one transaction, so a served list reaches the store within a flush interval and a write.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable

from service.events.counters import EventCounters
from service.events.store import EventStore
from service.rank.served import ServedList

log = logging.getLogger(__name__)


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

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Block until everything queued so far is written; False if that took longer than the timeout."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        with self._idle:
            while self._queue or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return not (self._queue or self._writing)
                self._idle.wait(min(remaining, 0.05))
        return True

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
            self._write_all()

    def _run(self) -> None:
        self._lower_priority()
        try:
            self._store.prepare_writer_thread()
        except Exception:
            log.exception("preparing the served-list writer's connection failed")
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            stopping = self._stopping
            self._write_all()
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

    def _write_all(self) -> None:
        """Write the queue in batches of at most ``max_batch``; a failed batch is dropped and counted."""
        while self._queue:
            with self._idle:
                self._writing = True
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._counters.served_queue_depth(len(self._queue))
            try:
                self._store.write_served(batch)
                self.written += len(batch)
            except Exception:
                log.exception("writing %d served lists failed; they are dropped", len(batch))
                self.dropped += len(batch)
                self._counters.served_list_dropped(len(batch))
            finally:
                for served in batch:
                    self._pending_ids.discard(served.request_id)
                self._candidates_out += sum(len(served.app_ids) for served in batch)
                with self._idle:
                    self._writing = False
                    self._idle.notify_all()
        self._counters.served_queue_depth(0)
