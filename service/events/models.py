"""Value types of the event log: incoming events, per-event outcomes, the /events response."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from service.errors import ErrorItem

EventType = Literal["impression", "download"]
EVENT_TYPES: tuple[EventType, ...] = ("impression", "download")


@dataclass(frozen=True, slots=True)
class EventIn:
    """One event of a POST /events batch whose fields passed the type checks.

    Attributes:
        index: position of the event in the posted ``events`` list (rejections refer to it).
        ts: the client's event time (unix seconds); ``None`` means "when received".
    """

    index: int
    event_id: str
    type: EventType
    request_id: str
    app_id: str
    user_id: str
    ts: float | None


@dataclass(frozen=True, slots=True)
class ServedRef:
    """What an event is checked against: the served list of its request_id."""

    user_id: str
    experiment: str
    arm: str
    ts: float
    app_ids: frozenset[str]


class Rejection(BaseModel):
    """Why one event of a batch was refused.

    Attributes:
        index: position of the event in the posted list.
        event_id: the event's id when it had a usable one.
        field: the offending field (``events[3].app_id`` style path).
        code: a short stable reason code (also the ``reason`` label of the rejection metric).
        reason: a sentence for humans.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    event_id: str | None
    field: str
    code: str
    reason: str


class IngestResponse(BaseModel):
    """The body of every POST /events answer (200 and 422 alike)."""

    accepted: int
    duplicates: int
    rejected: list[Rejection]


class RefusedBatch(BaseModel):
    """A 422 of POST /events: the issues in the service's error shape and, when the body was a batch
    whose every event was refused, the per-event outcome as in ``IngestResponse``."""

    detail: list[ErrorItem]
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = []


@dataclass(slots=True)
class BatchOutcome:
    """What the store did with one batch: counts and per-event refusals.

    ``accepted_by_arm`` counts the newly stored events by (experiment, arm, type), for the metrics.
    """

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    accepted_by_arm: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def merge(self, other: BatchOutcome) -> None:
        """Add another outcome of the same batch (a retry of some of its events) to this one."""
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend(other.rejected)
        self.accepted_by_arm.update(other.accepted_by_arm)


@dataclass(frozen=True, slots=True)
class ArmDaySums:
    """Per-user sums of one arm, overall (``day`` None) or on one day (days since 1970-01-01, UTC).

    ``users`` is the number of users with at least one event; the sums run over those users of their
    impression count I and download count D: sum I, sum D, sum I^2, sum D^2, sum I*D.
    """

    arm: str
    day: int | None
    users: int
    impressions: int
    downloads: int
    sum_ii: float
    sum_dd: float
    sum_id: float


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows deleted by a retention purge."""

    served_lists: int
    served_items: int
    events: int
    user_days: int
    item_features: int = 0
