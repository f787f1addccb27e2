"""The served-list writer (bounded, non-blocking, flushed in batches) and the group committer."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry, Gauge

from service.events.committer import CommitterClosed, GroupCommitter
from service.events.counters import EventCounters, EventMetrics
from service.events.log import EventLog, EventLogConfig
from service.events.models import BatchOutcome, EventIn
from service.events.store import SqlEventStore
from service.events.writer import ServedListWriter
from service.rank.served import ServedList
from tests.service.test_events_support import StoreTarget, event_in, served_list

pytest_plugins = ["tests.service.test_events_support"]


class RecordingStore:
    """Stands in for the event store: records what is written; can be made to fail or to block."""

    def __init__(self) -> None:
        self.lists: list[str] = []
        self.calls: list[int] = []
        self.fail = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def prepare_writer_thread(self) -> None:
        pass

    def write_served(self, lists: Sequence[ServedList]) -> int:
        if self.fail:
            raise RuntimeError("database gone")
        self.lists.extend(served.request_id for served in lists)
        return len(lists)

    def record_events(self, batches: Sequence[Sequence[EventIn]], received_at: float) -> list[BatchOutcome]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5.0)
            self.gate = None
        self.calls.append(len(batches))
        return [BatchOutcome(accepted=len(batch)) for batch in batches]


def test_submit_never_blocks_and_drops_beyond_the_bound() -> None:
    counters = EventCounters()
    writer = ServedListWriter(RecordingStore(), counters, max_queue=3)  # type: ignore[arg-type]
    for i in range(5):
        writer.submit(served_list(f"r{i}"))
    assert (writer.queue_depth(), writer.dropped, counters.dropped) == (3, 2, 2)
    assert writer.is_pending(["r2"]) and not writer.is_pending(["r4"])


def test_the_queue_is_also_bounded_by_the_candidates_it_holds() -> None:
    store = RecordingStore()
    writer = ServedListWriter(store, EventCounters(), max_queued_candidates=7)  # type: ignore[arg-type]
    for i in range(4):
        writer.submit(served_list(f"r{i}", app_ids=("a", "b", "c")))  # 3 candidates each
    assert (writer.queue_depth(), writer.dropped) == (2, 2)
    writer.close()
    writer2 = ServedListWriter(store, EventCounters(), max_queued_candidates=7)  # type: ignore[arg-type]
    writer2.start()
    for i in range(6):
        writer2.submit(served_list(f"s{i}", app_ids=("a", "b", "c")))
        assert writer2.flush(5.0)  # written lists free their budget
    writer2.close()
    assert writer2.dropped == 0 and store.lists[-6:] == [f"s{i}" for i in range(6)]


def test_close_writes_everything_that_was_queued() -> None:
    store = RecordingStore()
    writer = ServedListWriter(store, EventCounters(), flush_interval_s=60.0, max_batch=4)  # type: ignore[arg-type]
    writer.start()
    for i in range(10):
        writer.submit(served_list(f"r{i}"))
    writer.close()
    assert store.lists == [f"r{i}" for i in range(10)]
    assert (writer.written, writer.queue_depth()) == (10, 0)
    writer.submit(served_list("late"))  # after close: dropped and counted, never silently lost
    assert writer.dropped == 1


def test_lists_reach_the_store_within_the_flush_interval(store: SqlEventStore) -> None:
    writer = ServedListWriter(store, EventCounters(), flush_interval_s=0.05)
    writer.start()
    try:
        writer.submit(served_list("r1"))
        deadline = time.monotonic() + 2.0
        while writer.written == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.written == 1
        assert store.served_models("exp", 0, float("inf")) == [("lr", "20260101.000000")]
    finally:
        writer.close()


def test_a_failed_write_is_counted_as_dropped() -> None:
    store = RecordingStore()
    store.fail = True
    counters = EventCounters()
    writer = ServedListWriter(store, counters)  # type: ignore[arg-type]
    writer.submit(served_list("r1"))
    writer.close()  # never started: close writes from the caller's thread
    assert (writer.dropped, counters.dropped, writer.is_pending(["r1"])) == (1, 1, False)


def test_flush_returns_once_the_queue_is_written() -> None:
    store = RecordingStore()
    writer = ServedListWriter(store, EventCounters(), flush_interval_s=60.0)  # type: ignore[arg-type]
    writer.start()
    writer.submit(served_list("r1"))
    assert writer.flush(timeout_s=5.0)
    assert store.lists == ["r1"]
    writer.close()


def test_batches_queued_during_a_commit_share_the_next_one() -> None:
    store = RecordingStore()
    store.gate = threading.Event()
    committer = GroupCommitter(store, None)  # type: ignore[arg-type]
    committer.start()
    first = committer.submit([event_in(0)])
    assert store.entered.wait(5.0)  # the first commit is under way and held
    others = [committer.submit([event_in(i), event_in(i + 100)]) for i in range(1, 20)]
    store.gate.set()
    outcomes = [future.result(5.0) for future in (first, *others)]
    assert [o.accepted for o in outcomes] == [1] + [2] * 19
    assert store.calls == [1, 19]  # 20 requests, two transactions
    assert committer.commits == 2
    committer.close()
    with pytest.raises(CommitterClosed):
        committer.submit([event_in(1)]).result(1.0)


def test_a_failed_commit_fails_every_batch_of_its_group() -> None:
    class Broken(RecordingStore):
        def record_events(
            self, batches: Sequence[Sequence[EventIn]], received_at: float
        ) -> list[BatchOutcome]:
            raise RuntimeError("disk full")

    committer = GroupCommitter(Broken(), None)  # type: ignore[arg-type]
    committer.start()
    with pytest.raises(RuntimeError, match="disk full"):
        committer.submit([event_in(1)]).result(5.0)
    committer.close()


def gauge_values(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """The samples of the registry's one labelled gauge, by (experiment, arm)."""
    return {
        (sample.labels["experiment"], sample.labels["arm"]): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def test_maintenance_purges_old_rows_and_publishes_users_per_arm(target: StoreTarget) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("apprank_experiment_users", "Users per arm.", ["experiment", "arm"], registry=registry)
    counters = EventCounters(EventMetrics(experiment_users=gauge))
    config = EventLogConfig(retention_days=2, purge_interval_s=0.05, users_refresh_s=0.05)
    event_log = EventLog.open(target.url, config, counters=counters, prefix=target.prefix)
    now = time.time()
    event_log.store.migrate()
    event_log.store.write_served(
        [served_list("old", ts=now - 10 * 86400), served_list("new", user_id="u2", arm="treatment")]
    )
    event_log.store.record_events(
        [
            [
                event_in(1, request_id="old", ts=now - 10 * 86400 + 1),
                event_in(2, request_id="new", user_id="u2"),
            ]
        ],
        now,
    )
    event_log.start()
    try:
        deadline = time.monotonic() + 5.0
        while gauge_values(registry) != {("exp", "treatment"): 1} and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        event_log.close()
    assert gauge_values(registry) == {("exp", "treatment"): 1}  # the control user's day was purged
    assert counters.snapshot()["served_lists_dropped"] == 0
