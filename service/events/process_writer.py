"""``ProcessWriter``: /rank's served-list sink when the served lists are written by another process.

The request thread encodes the served list into a compact record (``service.events.record``, one
msgpack encode) and copies it into a byte ring shared with a writer process (``service.events.ring``,
``service.events.served_writer``): no system call, no wake-up, and nothing left for this worker's
other threads to do with the list, so storing it never competes with /rank for the worker's GIL.
The ring is bounded in bytes; a list that does not fit is dropped and counted at once.

A supervisor thread checks the writer process every ``supervise_s``: one that died is started again
on the same ring, which still holds every record not committed (nothing acknowledged to the ring is
lost by a crash of the writer; lists that found the ring full meanwhile are the ones dropped and
counted). It also forwards the writer's counters (lists written, given up, retried, values cut) to the
event log's counters and metrics. ``close`` asks the writer to drain the ring and waits for it; if the
writer cannot, what is left is written from this process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from service.events.counters import EventCounters
from service.events.ring import ByteRing, Slot
from service.events.served_writer import LoaderConfig, RingLoader
from service.events.store import EventStore
from service.rank.served import ServedList

log = logging.getLogger(__name__)
_WRITER_MAIN = "from service.events.served_writer import main; main()"
_FORWARDED = (Slot.WRITTEN, Slot.DROPPED, Slot.RETRIED, Slot.CUT_TOO_LONG, Slot.CUT_UNKNOWN)


def ring_directory() -> Path:
    """Where rings live: ``/dev/shm`` (memory, never written back to a disk) when there is one."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class ProcessWriter:
    """A byte ring, the writer process that empties it, and the thread that keeps that process alive.

    Args:
        url: the event store's database (the writer process opens its own connections).
        store: this process's store, for what is left to write at ``close`` if the writer cannot.
        counters: dropped-list, retry, queue-depth and restart metrics.
        prefix: the event tables' prefix.
        capacity_bytes: the ring's size: lists beyond it are dropped (and counted).
        flush_interval_s: the longest a list waits in the ring before its batch is written.
        max_batch: lists written per transaction at most (a full batch is written at once).
        nice: niceness of the writer process, so that busy cores serve the request handlers first.
        retry_horizon_s: how long after it was served a list is still retried when the database fails.
        max_retry_pause_s: the longest pause between two attempts while the database fails.
        supervise_s: how often the writer process is checked (and its counters forwarded).
        directory: where the ring's file is made (default ``ring_directory()``).
    """

    def __init__(
        self,
        url: str,
        store: EventStore,
        counters: EventCounters,
        *,
        prefix: str,
        capacity_bytes: int = 16 * 1024 * 1024,
        flush_interval_s: float = 0.05,
        max_batch: int = 1_000,
        nice: int = 10,
        retry_horizon_s: float = 60.0,
        max_retry_pause_s: float = 1.0,
        supervise_s: float = 0.2,
        directory: Path | None = None,
    ) -> None:
        from service.events.record import RecordEncoder

        self._store = store
        self._counters = counters
        self._capacity = capacity_bytes
        self._directory = directory
        self._config_fields = {
            "url": url,
            "prefix": prefix,
            "flush_interval_s": flush_interval_s,
            "max_batch": max_batch,
            "nice": nice,
            "retry_horizon_s": retry_horizon_s,
            "max_retry_pause_s": max_retry_pause_s,
        }
        self.retry_horizon_s = retry_horizon_s
        self._supervise_s = supervise_s
        self._encoder = RecordEncoder()
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, str]] = deque()  # (end offset in the ring, request_id)
        self._pending_ids: dict[str, int] = {}
        self._ring: ByteRing | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._supervisor: threading.Thread | None = None
        self._stop = threading.Event()
        self._stopping = False
        self._forwarded = dict.fromkeys(_FORWARDED, 0)
        self._spawned_at = 0.0
        self.refused = 0  # lists dropped here: the ring full, or a list that could not be encoded
        self.restarts = 0

    # -- the request thread's side ------------------------------------------------------------------

    def submit(self, served: ServedList) -> None:
        """Copy ``served``'s record into the ring; drop it (and count the drop) when it does not fit.
        Never blocks, beyond a lock held for a copy."""
        ring = self._ring
        if ring is None or self._stopping:
            self._refuse()
            return
        try:
            record = self._encoder.encode(served)
        except Exception as error:  # noqa: BLE001 - a list that cannot be encoded is dropped alone
            log.error("served list %r could not be encoded (%s); dropped", served.request_id, error)
            self._refuse()
            return
        with self._lock:
            end = ring.append(record)
            if end >= 0:
                self._pending.append((end, served.request_id))
                self._pending_ids[served.request_id] = end
                if len(self._pending) & 255 == 0:
                    self._prune(ring.get(Slot.TAIL))
                return
        self._refuse()

    def _refuse(self) -> None:
        self.refused += 1
        self._counters.served_list_dropped()

    # -- what the event log asks ----------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Lists stored by the writer process (every incarnation of it)."""
        return self._ring.get(Slot.WRITTEN) if self._ring is not None else self._forwarded[Slot.WRITTEN]

    @property
    def dropped(self) -> int:
        """Lists dropped: refused here, or given up by the writer."""
        given_up = self._ring.get(Slot.DROPPED) if self._ring is not None else self._forwarded[Slot.DROPPED]
        return self.refused + given_up

    @property
    def failing(self) -> bool:
        """True while the writer's last attempt failed on the database."""
        return self._ring is not None and self._ring.get(Slot.FAILING) == 1

    @property
    def pid(self) -> int | None:
        """The writer process's id (None before ``start``)."""
        return None if self._process is None else self._process.pid

    def queue_depth(self) -> int:
        """Lists in the ring, not stored yet."""
        return 0 if self._ring is None else self._ring.pending_records()

    def is_pending(self, request_ids: Iterable[str]) -> bool:
        """True when one of these requests' lists is in the ring, not stored yet."""
        if self._ring is None:
            return False
        with self._lock:
            self._prune(self._ring.get(Slot.TAIL))
            return any(request_id in self._pending_ids for request_id in request_ids)

    def _prune(self, tail: int) -> None:
        pending, ids = self._pending, self._pending_ids
        while pending and pending[0][0] <= tail:
            _, request_id = pending.popleft()
            if ids.get(request_id, -1) <= tail:
                ids.pop(request_id, None)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every list in the ring now is stored; False after the timeout, or at once while
        the database fails (the lists stay in the ring for their retries)."""
        ring = self._ring
        if ring is None:
            return True
        target = ring.get(Slot.HEAD)
        ring.bump(Slot.FLUSH_REQUESTED)
        deadline = time.monotonic() + timeout_s
        while ring.get(Slot.TAIL) < target and not self.failing and time.monotonic() < deadline:
            time.sleep(0.001)
        self._forward()
        return ring.get(Slot.TAIL) >= target

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Make the ring, start the writer process and its supervisor."""
        if self._ring is not None:
            return
        self._ring = self._create_ring()
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="served-writer-watch", daemon=True)
        self._supervisor.start()

    def _create_ring(self) -> ByteRing:
        """The ring, in ``directory`` (or ``/dev/shm``, then the temporary directory when that is full)."""
        name = f"apprank-served-{os.getpid()}-{uuid.uuid4().hex[:12]}.ring"
        directories = (
            [self._directory] if self._directory else [ring_directory(), Path(tempfile.gettempdir())]
        )
        for position, directory in enumerate(directories):
            try:
                return ByteRing.create(directory / name, self._capacity)
            except OSError as error:
                if position == len(directories) - 1:
                    raise
                log.warning(
                    "no room for the served-list ring in %s (%s); trying the next place", directory, error
                )
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        assert self._ring is not None
        config = LoaderConfig(ring=str(self._ring.path), **self._config_fields)  # type: ignore[arg-type]
        env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen([sys.executable, "-c", _WRITER_MAIN], stdin=subprocess.PIPE, env=env)
        assert process.stdin is not None
        process.stdin.write(config.to_json().encode() + b"\n")
        process.stdin.flush()  # stdin stays open: its end tells the writer this worker is gone
        self._process = process
        self._spawned_at = time.monotonic()

    def _supervise(self) -> None:
        quick_deaths = 0  # writers in a row that died soon after their start: restarts back off
        next_start = 0.0
        while not self._stop.wait(self._supervise_s):
            self._forward()
            process = self._process
            if process is None or process.poll() is None or self._stopping:
                continue
            if next_start == 0.0:
                quick_deaths = quick_deaths + 1 if time.monotonic() - self._spawned_at < 5.0 else 0
                next_start = time.monotonic() + min(5.0, 0.1 * 2**quick_deaths) if quick_deaths > 1 else 0.0
            if time.monotonic() < next_start:
                continue
            next_start = 0.0
            self.restarts += 1
            self._counters.served_writer_restarted()
            log.error(
                "the served-list writer (pid %d) exited with %s; restarting it (%d lists in its ring)",
                process.pid,
                process.returncode,
                self.queue_depth(),
            )
            _close_stdin(process)
            try:
                self._spawn()
            except OSError:
                log.exception("restarting the served-list writer failed; trying again")

    def _forward(self) -> None:
        """Move the writer's counters (deltas) into the event log's counters and metrics."""
        ring = self._ring
        if ring is None:
            return
        with self._lock:
            now = {slot: ring.get(slot) for slot in _FORWARDED}
            delta = {slot: now[slot] - self._forwarded[slot] for slot in _FORWARDED}
            self._forwarded = now
        if delta[Slot.DROPPED]:
            self._counters.served_list_dropped(delta[Slot.DROPPED])
        if delta[Slot.RETRIED]:
            self._counters.served_list_retried(delta[Slot.RETRIED])
        self._counters.served_values_cut(delta[Slot.CUT_UNKNOWN], delta[Slot.CUT_TOO_LONG])
        self._counters.served_queue_depth(ring.pending_records())

    def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new lists, let the writer drain the ring, stop it; write from here what it left."""
        ring = self._ring
        if ring is None:
            return
        self._stopping = True
        ring.set(Slot.CLOSING, 1)
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout_s)
        process = self._process
        if process is not None and ring.get(Slot.PID) != process.pid:
            process.kill()  # still starting (it has not attached to the ring): quicker to write from here
            process.wait()
        if process is not None:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("the served-list writer did not stop within %.1f s; killing it", timeout_s)
                process.kill()
                process.wait()
            _close_stdin(process)
        if ring.pending_records():
            log.warning(
                "writing the %d served lists the writer left, from the worker", ring.pending_records()
            )
            loader = RingLoader(ring, self._store, LoaderConfig(ring=str(ring.path), **self._config_fields))  # type: ignore[arg-type]
            loader.drain(final=True)
        self._forward()
        ring.close()
        ring.unlink()
        self._ring = None


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        try:
            process.stdin.close()
        except OSError:
            pass
