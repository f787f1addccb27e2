"""Row builders: accepted events into rows and user-day counts, labeled rows out of the export query.

A served list's rows are built by its record (``service.events.record.ServedRecord.rows``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.events.models import EventIn, ServedRef

DAY_S = 86400.0


def event_day(ts: float) -> int:
    """Days since 1970-01-01 (UTC) of a unix time."""
    return int(ts // DAY_S)


def event_row(event: EventIn, ref: ServedRef, ts: float, received_at: float) -> tuple[Any, ...]:
    """An events row (``sql.EVENT_COLUMNS`` order) with experiment and arm from the served list."""
    return (
        event.event_id,
        event.type,
        event.request_id,
        event.app_id,
        event.user_id,
        ts,
        event_day(ts),
        received_at,
        ref.experiment,
        ref.arm,
    )


def user_day_updates(events: Iterable[tuple[EventIn, ServedRef, float]]) -> list[tuple[Any, ...]]:
    """Increments of ``event_user_days`` for newly inserted events, sorted by key.

    Sorting gives every concurrent writer the same lock order (no deadlocks on PostgreSQL).
    """
    counts: dict[tuple[str, str, str, int], list[int]] = {}
    for event, ref, ts in events:
        key = (ref.experiment, ref.arm, event.user_id, event_day(ts))
        pair = counts.setdefault(key, [0, 0])
        pair[0 if event.type == "impression" else 1] += 1
    return [(*key, impressions, downloads) for key, (impressions, downloads) in sorted(counts.items())]


@dataclass(frozen=True, slots=True)
class LabeledRow:
    """One impression with everything logged about it, and whether the item was downloaded."""

    ts: float
    event_id: str
    request_id: str
    app_id: str
    user_id: str
    arm: str
    model: str
    version: str
    user: Mapping[str, Any]
    context: Mapping[str, Any]
    position: int
    ctr: float
    bid: float | None
    item: Mapping[str, Any]
    label: int

    @classmethod
    def from_record(cls, record: Sequence[Any]) -> LabeledRow:
        """Build from a row of the labeled-page query (``Queries.labeled_page``)."""
        ts, event_id, request_id, app_id, user_id, arm, model, version = record[:8]
        user_json, context_json, position, ctr, bid, features_json, label = record[8:]
        return cls(
            ts=float(ts),
            event_id=event_id,
            request_id=request_id,
            app_id=app_id,
            user_id=user_id,
            arm=arm,
            model=model,
            version=version,
            user=orjson.loads(user_json),
            context=orjson.loads(context_json),
            position=int(position),
            ctr=float(ctr),
            bid=None if bid is None else float(bid),
            item=orjson.loads(features_json),
            label=int(label),
        )


@dataclass(frozen=True, slots=True)
class TrainingPage:
    """A page of labeled impressions as columns, with only what training reads: the ids, the logged raw
    JSON of user, context and item (decoded by the reader, once per distinct text), the labels."""

    user_ids: Sequence[str]
    app_ids: Sequence[str]
    user_json: Sequence[str]
    context_json: Sequence[str]
    features_json: Sequence[str]
    labels: Sequence[int]

    @classmethod
    def from_records(cls, records: Sequence[Sequence[Any]]) -> TrainingPage:
        """Build from rows of the training-page query (``Queries.training_page``)."""
        columns = list(zip(*records, strict=True)) if records else [()] * 8
        _, _, user_ids, app_ids, user_json, context_json, features_json, labels = columns
        return cls(user_ids, app_ids, user_json, context_json, features_json, labels)

    def __len__(self) -> int:
        return len(self.labels)
