"""The event store: one narrow interface, one SQL implementation, two dialect flavours.

``EventStore`` is what the rest of the event log uses. ``SqlEventStore`` implements it on
``service.db.Database`` with SQL shared by both dialects (``service.events.sql``);
``SQLiteEventStore`` and ``PostgresEventStore`` only differ in how a transaction is retried and how
big one statement may be. ``open_event_store`` picks the right one for a database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from service.db import Cursor, Database, StoreUnavailableError
from service.events.models import ArmDaySums, BatchOutcome, EventIn, PurgeCounts, Rejection, ServedRef
from service.events.record import FeatureVersions, FieldsCache, ServedRecord, record_of
from service.events.rows import LabeledRow, TrainingPage, event_row, user_day_updates
from service.events.schema import migrations
from service.events.sql import Queries
from service.events.validation import CLOCK_SKEW_S, check_reference
from service.rank.served import ServedList
from service.settings import DEFAULT_TABLE_PREFIX

log = logging.getLogger(__name__)
T = TypeVar("T")
DAY_S = 86400.0
CONFLICT = "event_id_conflict"
StoredEvent = tuple[str, str, str, str]  # type, request_id, app_id, user_id


class EventStore(Protocol):
    """Durable served lists and events, and the aggregates the report and the export read."""

    def migrate(self) -> None: ...
    def prepare_writer_thread(self) -> None: ...
    def write_served(self, lists: Sequence[ServedList | ServedRecord]) -> int: ...
    def record_events(
        self, batches: Sequence[Sequence[EventIn]], received_at: float
    ) -> list[BatchOutcome]: ...
    def arm_sums(self, experiment: str, first_day: int, last_day: int) -> list[ArmDaySums]: ...
    def served_models(self, experiment: str, start_ts: float, end_ts: float) -> list[tuple[str, str]]: ...
    def user_counts(self) -> list[tuple[str, str, int]]: ...
    def labeled_rows(self, experiment: str, start_ts: float, end_ts: float) -> Iterator[LabeledRow]: ...
    def training_pages(self, experiment: str, start_ts: float, end_ts: float) -> Iterator[TrainingPage]: ...
    def purge(self, older_than_days: int, now: float | None = None) -> PurgeCounts: ...


class SqlEventStore:
    """``EventStore`` on a ``Database``; subclasses set the dialect's limits and retry policy."""

    max_rows_per_statement = 500
    page_size = 10_000

    def __init__(
        self, db: Database, prefix: str = DEFAULT_TABLE_PREFIX, *, clock_skew_s: float = CLOCK_SKEW_S
    ) -> None:
        self.db = db
        self.prefix = prefix
        self.clock_skew_s = clock_skew_s
        self.q = Queries(prefix)
        self._fields = FieldsCache()
        self._versions = FeatureVersions()

    def migrate(self) -> None:
        """Create or upgrade the event log's tables."""
        self.db.migrate(migrations(self.prefix))

    def prepare_writer_thread(self) -> None:
        """Called once by the served-list writer's thread before its first write."""

    def _retryable(self, error: Exception) -> bool:
        """A lost connection: the next attempt runs on a fresh one."""
        return isinstance(error, StoreUnavailableError) and error.reconnects

    def _transaction(self, work: Callable[[Cursor], T], attempts: int = 3) -> T:
        """Run ``work`` in one transaction, retrying it when the dialect says the failure is transient."""
        for attempt in range(1, attempts + 1):
            try:
                with self.db.transaction() as cursor:
                    return work(cursor)
            except Exception as error:
                if attempt == attempts or not self._retryable(error):
                    raise
                log.warning("event store transaction retried after %s (attempt %d)", error, attempt)
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def write_served(self, lists: Sequence[ServedList | ServedRecord]) -> int:
        """Store served lists, their returned items and the item feature versions not stored yet, in one
        transaction; returns the item count. ``ServedList``s go through the request thread's record
        encoding first (``record_of``), so every caller stores exactly what the writer process would."""
        list_rows: list[tuple[Any, ...]] = []
        item_rows: list[tuple[Any, ...]] = []
        features: dict[str, tuple[str, str, str]] = {}
        for served in lists:
            record = record_of(served)
            list_row, items, versions = record.rows(self._fields.fields(record), self._versions)
            list_rows.append(list_row)
            item_rows.extend(items)
            for version in versions:
                features.setdefault(version[0], version)
        # one lock order for every writer (PostgreSQL: no deadlock between workers' batches)
        feature_rows = [features[key] for key in sorted(features)]

        def work(cursor: Cursor) -> int:
            # Multi-row statements, not executemany: one driver step per chunk instead of per row.
            self._insert_many(cursor, self.q.insert_item_features, feature_rows)
            self._insert_many(cursor, self.q.insert_served_lists, list_rows)
            self._insert_many(cursor, self.q.insert_served_items, item_rows)
            return len(item_rows)

        return self._transaction(work)

    def _insert_many(
        self, cursor: Cursor, statement: Callable[[int], str], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        for _ in self._execute_chunks(cursor, statement, rows):
            pass

    def _execute_chunks(
        self, cursor: Cursor, statement: Callable[[int], str], rows: Sequence[Sequence[Any]]
    ) -> Iterator[Cursor]:
        """Run ``statement(n)`` over ``rows`` in chunks of ``max_rows_per_statement``; yields after each."""
        step = self.max_rows_per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            cursor.execute(self.db.sql(statement(len(chunk))), [v for row in chunk for v in row])
            yield cursor

    def record_events(self, batches: Sequence[Sequence[EventIn]], received_at: float) -> list[BatchOutcome]:
        """Check and insert several batches in one transaction (a group commit).

        Events referring to no served request, to an item not returned for it, or to another user are
        refused; an event whose id (or whose request, item and type) is already stored is a duplicate,
        unless its id is stored for other content (another type, request, item or user): a conflict,
        refused with ``event_id_conflict``.
        The per-user-day counts are updated for the newly inserted events only.
        """
        return self._transaction(lambda cursor: self._record(cursor, batches, received_at))

    def _record(
        self, cursor: Cursor, batches: Sequence[Sequence[EventIn]], received_at: float
    ) -> list[BatchOutcome]:
        pairs = sorted({(event.request_id, event.app_id) for batch in batches for event in batch})
        refs = self._served_refs(cursor, pairs)
        outcomes: list[BatchOutcome] = []
        inserted_events: list[tuple[EventIn, ServedRef, float]] = []
        for batch in batches:
            outcome = BatchOutcome()
            kept: list[tuple[EventIn, ServedRef, float]] = []
            for event in batch:
                ref = refs.get(event.request_id)
                rejection = check_reference(event, ref, received_at, self.clock_skew_s)
                if rejection is not None or ref is None:
                    outcome.rejected.extend([rejection] if rejection is not None else [])
                    continue
                kept.append((event, ref, received_at if event.ts is None else event.ts))
            new = self._insert_events(cursor, [event_row(e, r, ts, received_at) for e, r, ts in kept])
            stored = self._id_conflicts(cursor, [e for e, _, _ in kept if _key(e) not in new])
            for event, ref, ts in kept:
                if _key(event) in new:
                    new.discard(_key(event))  # the same event twice in the batch: the second is a duplicate
                    outcome.accepted += 1
                    outcome.accepted_by_arm[(ref.experiment, ref.arm, event.type)] += 1
                    inserted_events.append((event, ref, ts))
                elif (conflict := _conflict(event, stored.get(event.event_id))) is not None:
                    outcome.rejected.append(conflict)
                else:
                    outcome.duplicates += 1
            outcomes.append(outcome)
        updates = user_day_updates(inserted_events)
        if updates:
            cursor.executemany(self.db.sql(self.q.upsert_user_day), updates)
        return outcomes

    def _served_refs(self, cursor: Cursor, pairs: Sequence[tuple[str, str]]) -> dict[str, ServedRef]:
        found: dict[str, tuple[str, str, str, float, set[str]]] = {}
        for done in self._execute_chunks(cursor, self.q.served_refs, pairs):
            for request_id, user_id, experiment, arm, ts, app_id in done.fetchall():
                entry = found.setdefault(request_id, (user_id, experiment, arm, float(ts), set()))
                if app_id is not None:
                    entry[4].add(app_id)
        return {rid: ServedRef(u, e, a, ts, frozenset(apps)) for rid, (u, e, a, ts, apps) in found.items()}

    def _id_conflicts(self, cursor: Cursor, events: Sequence[EventIn]) -> dict[str, StoredEvent]:
        """For events not inserted: what is stored under their event_id, where that may conflict.

        An event whose (request, item, type) is stored already, under whatever id, is a duplicate and
        left out; so is one whose id is not stored.
        """
        triples = sorted({(e.request_id, e.app_id, e.type) for e in events})
        known: set[tuple[str, str, str]] = set()
        for done in self._execute_chunks(cursor, self.q.stored_triples, triples):
            known.update((str(r), str(a), str(t)) for r, a, t in done.fetchall())
        ids = sorted({(e.event_id,) for e in events if (e.request_id, e.app_id, e.type) not in known})
        found: dict[str, StoredEvent] = {}
        for done in self._execute_chunks(cursor, self.q.stored_events, ids):
            for event_id, kind, request_id, app_id, user_id in done.fetchall():
                found[str(event_id)] = (str(kind), str(request_id), str(app_id), str(user_id))
        return found

    def _insert_events(
        self, cursor: Cursor, rows: Sequence[tuple[Any, ...]]
    ) -> set[tuple[str, str, str, str]]:
        """Insert event rows; the (event_id, request_id, app_id, type) of those actually inserted."""
        inserted: set[tuple[str, str, str, str]] = set()
        for done in self._execute_chunks(cursor, self.q.insert_events_returning, rows):
            inserted.update((str(a), str(b), str(c), str(d)) for a, b, c, d in done.fetchall())
        return inserted

    def insert_events_unchecked(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Bulk-load trusted event rows (``sql.EVENT_COLUMNS`` order) without checks or user-day counts.

        For benchmarks and imports: call ``rebuild_user_days`` afterwards.
        """
        self._transaction(lambda cursor: cursor.executemany(self.db.sql(self.q.insert_event_unchecked), rows))

    def rebuild_user_days(self) -> None:
        """Recompute the per-user-day counts from the events (after a bulk load, or as a repair)."""

        def work(cursor: Cursor) -> None:
            cursor.execute(self.q.clear_user_days)
            cursor.execute(self.q.rebuild_user_days)

        self._transaction(work)

    def arm_sums(self, experiment: str, first_day: int, last_day: int) -> list[ArmDaySums]:
        """Per-arm sums of per-user counts, overall and per day, for days in [first_day, last_day]."""
        params = (experiment, first_day, last_day) * 2
        rows = self.db.query(lambda cursor: cursor.execute(self.db.sql(self.q.arm_sums), params).fetchall())
        return [
            ArmDaySums(
                arm=arm,
                day=None if day is None else int(day),
                users=int(users),
                impressions=int(impressions),
                downloads=int(downloads),
                sum_ii=float(sum_ii),
                sum_dd=float(sum_dd),
                sum_id=float(sum_id),
            )
            for arm, day, users, impressions, downloads, sum_ii, sum_dd, sum_id in rows
        ]

    def user_counts(self) -> list[tuple[str, str, int]]:
        """Distinct users with events, per (experiment, arm), over every day kept."""
        rows = self.db.query(lambda cursor: cursor.execute(self.q.user_counts).fetchall())
        return [(str(e), str(a), int(n)) for e, a, n in rows]

    def served_models(self, experiment: str, start_ts: float, end_ts: float) -> list[tuple[str, str]]:
        """The (model, version) pairs that served the experiment in [start_ts, end_ts)."""
        query, params = self.db.sql(self.q.served_models), (experiment, start_ts, end_ts)
        rows = self.db.query(lambda cursor: cursor.execute(query, params).fetchall())
        return [(str(model), str(version)) for model, version in rows]

    def labeled_rows(self, experiment: str, start_ts: float, end_ts: float) -> Iterator[LabeledRow]:
        """Every impression in [start_ts, end_ts) with its logged features and a 0/1 download label."""
        for page in self._pages(self.q.labeled_page, experiment, start_ts, end_ts):
            yield from map(LabeledRow.from_record, page)

    def training_pages(self, experiment: str, start_ts: float, end_ts: float) -> Iterator[TrainingPage]:
        """The rows of ``labeled_rows`` with only what training reads, a page of columns at a time."""
        for page in self._pages(self.q.training_page, experiment, start_ts, end_ts):
            yield TrainingPage.from_records(page)

    def _pages(self, query: str, experiment: str, start_ts: float, end_ts: float) -> Iterator[list[Any]]:
        """The pages of a ``(ts, event_id)``-ordered labeled query (see ``sql._LABELED_JOINS``)."""
        after_ts, after_id = float("-inf"), ""
        query = self.db.sql(query)
        while True:
            lower = max(start_ts, after_ts)  # seeks past the pages already read (see sql)
            params = (experiment, lower, end_ts, after_ts, after_ts, after_id, self.page_size)
            page = self.db.query(lambda cursor: cursor.execute(query, params).fetchall())  # noqa: B023
            if page:
                yield page
            if len(page) < self.page_size:
                return
            after_ts, after_id = float(page[-1][0]), str(page[-1][1])

    def purge(self, older_than_days: int, now: float | None = None) -> PurgeCounts:
        """Delete served lists, items, events and user-day counts of UTC days older than N days.

        The cut is at a day boundary (the start of the UTC day ``older_than_days`` days before now),
        so the per-user-day counts stay consistent with the remaining events.
        """
        if older_than_days < 0:
            raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
        cutoff_day = int(((time.time() if now is None else now) - older_than_days * DAY_S) // DAY_S)
        cutoff_ts = cutoff_day * DAY_S

        def work(cursor: Cursor) -> dict[str, int]:
            counts: dict[str, int] = {}
            for name, statement in self.q.purge:
                if name == "item_features":
                    for features_statement in self.q.purge_features[self.db.dialect]:
                        cursor.execute(features_statement)
                else:
                    cursor.execute(
                        self.db.sql(statement), (cutoff_day if name == "user_days" else cutoff_ts,)
                    )
                counts[name] = max(cursor.rowcount, 0)
            return counts

        counts = self._transaction(work)
        log.info("purged event log rows before day %d: %s", cutoff_day, counts)
        return PurgeCounts(**counts)


def _key(event: EventIn) -> tuple[str, str, str, str]:
    """The columns the event insert returns for a row it stored."""
    return (event.event_id, event.request_id, event.app_id, event.type)


def _conflict(event: EventIn, stored: StoredEvent | None) -> Rejection | None:
    """A rejection when ``event`` reuses a stored event_id for other content, else None (a duplicate).

    Only what identifies the event counts (type, request, app, user): ``ts`` defaults to the time of
    receipt, so an honest resend may carry another one.
    """
    if stored is None or stored == (event.type, event.request_id, event.app_id, event.user_id):
        return None
    kind, request_id, app_id, _ = stored
    reason = (
        f"event_id {event.event_id!r} is already stored for another event (a {kind} of app {app_id!r} "
        f"for request {request_id!r}); a resend must repeat the same type, request_id, app_id and user_id"
    )
    field = f"events[{event.index}].event_id"
    return Rejection(index=event.index, event_id=event.event_id, field=field, code=CONFLICT, reason=reason)


class SQLiteEventStore(SqlEventStore):
    """SQLite (WAL): one writer at a time; ``busy_timeout`` already makes writers wait their turn."""

    max_rows_per_statement = 500  # 500 x 10 placeholders, far below SQLite's 32,766

    def prepare_writer_thread(self) -> None:
        """The writer's connection commits without fsync (``synchronous=NORMAL``).

        Served lists are a best-effort log: a commit survives the process being killed (it is in the
        WAL), only an OS crash can lose the last ones. Events keep ``FULL``, and since the WAL is one
        sequential file, an event commit's fsync also makes every served list written before it durable.
        """
        self.db.set_thread_synchronous("NORMAL")


class PostgresEventStore(SqlEventStore):
    """PostgreSQL: replicas writing the same keys may deadlock; such transactions are retried."""

    max_rows_per_statement = 1000  # 1,000 x 10 parameters, below psycopg's 65,535

    def _retryable(self, error: Exception) -> bool:
        from psycopg import errors

        deadlock = isinstance(error, errors.DeadlockDetected | errors.SerializationFailure)
        return deadlock or super()._retryable(error)


def open_event_store(
    db: Database, prefix: str = DEFAULT_TABLE_PREFIX, *, clock_skew_s: float = CLOCK_SKEW_S
) -> SqlEventStore:
    """The event store for ``db``'s dialect, tables named ``{prefix}...`` (created by ``migrate``)."""
    store_class = PostgresEventStore if db.dialect == "postgresql" else SQLiteEventStore
    return store_class(db, prefix, clock_skew_s=clock_skew_s)
