"""The writer process: loads the served-list records of one worker's ring into the event store.

Started by ``service.events.process_writer.ProcessWriter`` (``python -c`` calling ``main``)
with its settings as one JSON line on stdin (the database URL stays out of the process list). It has
its own interpreter, so storing served lists never takes the worker's GIL.

The loop (``RingLoader``) wakes every ``poll_s``; it writes what the ring holds once a batch is full,
once the oldest record has waited ``flush_interval_s``, or at once when the worker asks (``flush``) or
stops. Records are released from the ring only after their transaction commits, so a loader killed
mid-write loses nothing its successor cannot write again (the inserts are idempotent). When the database
fails (``service.db.is_transient``) the records stay in the ring and are retried with a growing pause;
those older than ``retry_horizon_s`` are given up, and meanwhile the ring fills and the worker drops
new lists (both counted). A record the store refuses on its data is written alone and dropped alone.

The process exits once the ring is drained after the worker set ``CLOSING``, or after its stdin
closed (the worker is gone), or on SIGTERM; SIGINT (a terminal's Ctrl-C, sent to the whole process
group) is left to the worker, which then stops it in order.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from service.db import Database, is_transient
from service.events.record import ServedRecord, decode_record
from service.events.ring import ByteRing, Slot
from service.events.store import EventStore, open_event_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderConfig:
    """What the writer process needs: where to read, where to write, and its pace."""

    ring: str
    url: str
    prefix: str
    flush_interval_s: float = 0.05
    poll_s: float = 0.005
    max_batch: int = 1_000
    nice: int = 10
    retry_horizon_s: float = 60.0
    max_retry_pause_s: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class RingLoader:
    """Moves records from ``ring`` to ``store`` (see the module's doc); ``stop`` ends ``run`` after a
    last drain."""

    def __init__(
        self, ring: ByteRing, store: EventStore, config: LoaderConfig, *, report_cuts: bool = False
    ) -> None:
        self.ring = ring
        self._report_cuts = report_cuts
        self.store = store
        self.config = config
        self.stop = threading.Event()
        self._pause = 0.0
        self._retry_at = 0.0
        self._waiting_since: float | None = None
        self._flushes_seen = -1  # what a new loader finds in the ring is written at once
        # the counts of earlier incarnations of the writer on this ring
        self._cut_base = {slot: ring.get(slot) for slot in (Slot.CUT_TOO_LONG, Slot.CUT_UNKNOWN)}

    def run(self) -> None:
        """Load until asked to stop, then drain what is left (one attempt for what fails)."""
        ring, poll = self.ring, self.config.poll_s
        while True:
            ring.bump(Slot.HEARTBEAT)
            stopping = self.stop.is_set() or ring.get(Slot.CLOSING) == 1
            if ring.pending_records() == 0:
                self._waiting_since = None
                if stopping:
                    return
                self.stop.wait(poll)
                continue
            if stopping:
                self.drain(final=True)
                continue
            if self._due():
                self.drain(final=False)
            else:
                self.stop.wait(poll)

    def _due(self) -> bool:
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        if self._pause > 0 and now < self._retry_at:
            return False
        flushes = self.ring.get(Slot.FLUSH_REQUESTED)
        return (
            flushes != self._flushes_seen
            or self.ring.pending_records() >= self.config.max_batch
            or now - self._waiting_since >= self.config.flush_interval_s
        )

    def drain(self, final: bool) -> None:
        """Write everything in the ring now, in batches; stops early while the database fails."""
        self._flushes_seen = self.ring.get(Slot.FLUSH_REQUESTED)
        self._waiting_since = None
        while self.ring.pending_records():
            payloads, ends = self.ring.read(self.config.max_batch)
            if not payloads:
                return
            if not self._write(payloads, ends, final):
                return

    def _release(self, end: int, records: int) -> None:
        """Consume up to ``end``, once the counts of what was written are published (a flush that
        sees the records gone sees their counts too)."""
        if self._report_cuts:
            self._cuts()
        self.ring.consume(end, records)

    def _cuts(self) -> None:
        """Publish this process's counts of cut values (``logged_json``) in the ring, for the worker's
        metrics (this process exports none of its own)."""
        from prometheus_client import REGISTRY

        import service.metrics  # noqa: F401 - defines the counter ``logged_json`` increments

        for slot, reason in ((Slot.CUT_TOO_LONG, "too_long"), (Slot.CUT_UNKNOWN, "unknown_field")):
            total = REGISTRY.get_sample_value("apprank_served_values_cut_total", {"reason": reason}) or 0.0
            self.ring.set(slot, self._cut_base[slot] + int(total))

    def _write(self, payloads: list[bytes], ends: list[int], final: bool) -> bool:
        """Write one batch; releases what was stored or given up. False when the database failed."""
        records: list[tuple[ServedRecord, int]] = []
        for payload, end in zip(payloads, ends, strict=True):
            try:
                records.append((decode_record(payload), end))
            except Exception as error:  # noqa: BLE001 - a record that cannot be read is dropped alone
                log.error("a served-list record could not be decoded (%s); dropped", error)
                self.ring.bump(Slot.DROPPED)
                records.append((_UNREADABLE, end))
        readable = [record for record, _ in records if record is not _UNREADABLE]
        try:
            self.store.write_served(readable)
        except Exception as error:
            if is_transient(error):
                return self._failed(error, records, final)
            log.warning("writing %d served lists failed (%s); writing them one by one", len(readable), error)
            return self._write_one_by_one(records, final)
        self._succeeded(len(readable), ends[-1], len(records))
        return True

    def _write_one_by_one(self, records: list[tuple[ServedRecord, int]], final: bool) -> bool:
        for position, (record, end) in enumerate(records):
            if record is not _UNREADABLE:
                try:
                    self.store.write_served([record])
                except Exception as error:
                    if is_transient(error):
                        return self._failed(error, records[position:], final)
                    log.error("served list %r refused by the store (%s); dropped", record.request_id, error)
                    self.ring.bump(Slot.DROPPED)
                else:
                    self.ring.bump(Slot.WRITTEN)
            self._release(end, 1)
        self._pause = 0.0
        self.ring.set(Slot.FAILING, 0)
        return True

    def _succeeded(self, written: int, end: int, records: int) -> None:
        self.ring.bump(Slot.WRITTEN, written)
        self._release(end, records)
        self._pause = 0.0
        self.ring.set(Slot.FAILING, 0)

    def _failed(self, error: BaseException, records: list[tuple[ServedRecord, int]], final: bool) -> bool:
        """The database failed: give up the records past the horizon (all of them at shutdown), pause."""
        horizon = time.time() - self.config.retry_horizon_s
        expired = 0
        for record, _ in records:
            if not final and record is not _UNREADABLE and record.ts >= horizon:
                break
            expired += 1
        if expired:
            log.error("%d served lists given up after a database failure (%s)", expired, error)
            self.ring.bump(Slot.DROPPED, expired)
            self._release(records[expired - 1][1], expired)
        if final:
            return expired == len(records)
        self._pause = min(self.config.max_retry_pause_s, max(self.config.flush_interval_s, 2 * self._pause))
        self._retry_at = time.monotonic() + self._pause
        self.ring.set(Slot.FAILING, 1)
        self.ring.bump(Slot.RETRIED, len(records) - expired)
        log.warning("writing served lists failed (%s); retrying in %.2f s", error, self._pause)
        return False


_UNREADABLE = ServedRecord("", 0.0, "", "", 0, "", "", "", "", {}, {}, [], b"", None, [])  # a marker


def _watch_stdin(stop: threading.Event, orphaned: threading.Event) -> None:
    """Set ``orphaned`` and ``stop`` when stdin closes: the worker that started this process is gone."""
    try:
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        orphaned.set()
        stop.set()


def main() -> None:
    """The writer process's entry point (see the module's doc)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s served-list writer: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = LoaderConfig(**json.loads(sys.stdin.readline()))
    if config.nice > 0:
        os.nice(config.nice)
    ring = ByteRing.attach(Path(config.ring))
    ring.set(Slot.PID, os.getpid())
    db = Database(config.url, pool_size=2)
    store = open_event_store(db, config.prefix)
    try:
        store.prepare_writer_thread()
    except Exception:
        log.exception("preparing the writer's connection failed")
    loader = RingLoader(ring, store, config, report_cuts=True)
    signal.signal(signal.SIGTERM, lambda *_: loader.stop.set())
    orphaned = threading.Event()
    watch = threading.Thread(
        target=_watch_stdin, args=(loader.stop, orphaned), name="stdin-watch", daemon=True
    )
    watch.start()
    code = 0
    try:
        loader.run()
        if orphaned.is_set() and ring.get(Slot.CLOSING) == 0:
            log.warning("the worker is gone: its served lists are written, its ring removed")
            ring.unlink()  # nobody else will (a worker that closes removes its ring itself)
    except BaseException:
        log.exception("the served-list writer failed")
        code = 1
    finally:
        db.close()
        logging.shutdown()
        os._exit(code)  # not a normal exit: the stdin watcher is blocked in a read
