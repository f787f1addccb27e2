"""Checks of POST /events payloads: the batch's shape, each event's fields, and its references.

Field checks (``parse_batch``) are pure and run in the request handler; reference checks
(``check_reference``) need the served list and run in the committer, inside the insert transaction.
A bad event never spoils its batch: it becomes a ``Rejection`` and the others go on. That holds for
strings the database cannot store too (a NUL, a lone surrogate): a body orjson refuses for a lone
surrogate is read again by the standard library, so that only the event holding it is refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from service.events.models import EVENT_TYPES, EventIn, EventType, Rejection, ServedRef
from service.jsonbody import UNSTORABLE, UNSTORABLE_MSG, storable
from service.settings import DEFAULT_EVENT_CLOCK_SKEW_S

MAX_ID_LENGTH = 256
# Client and server clocks differ: an event time may precede the served list (or follow the
# server's clock) by this much before it is refused.
CLOCK_SKEW_S = DEFAULT_EVENT_CLOCK_SKEW_S


class BatchError(Exception):
    """The whole body is unusable (not JSON, no ``events`` list, too many events)."""

    def __init__(self, status: int, field: str, reason: str, code: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.status = status
        self.field = field
        self.reason = reason
        self.code = code


def parse_batch(body: bytes, max_events: int) -> tuple[list[EventIn], list[Rejection]]:
    """Parse a POST /events body into well-typed events and per-event rejections.

    Raises:
        BatchError: the body is not JSON (400), not ``{"events": [...]}`` or empty (422), or holds
            more than ``max_events`` events (413).
    """
    payload = _load(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise BatchError(422, "events", "the body must be an object with an 'events' list", "list_type")
    raw_events: list[Any] = payload["events"]
    if not raw_events:
        raise BatchError(422, "events", "must hold at least one event", "too_short")
    if len(raw_events) > max_events:
        msg = f"holds {len(raw_events)} events, more than the limit {max_events}"
        raise BatchError(413, "events", msg, "too_long")
    events: list[EventIn] = []
    rejections: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        parsed = parse_event(index, raw)
        if isinstance(parsed, Rejection):
            rejections.append(parsed)
        else:
            events.append(parsed)
    return events, rejections


def _load(body: bytes) -> Any:
    """The JSON document; what orjson refuses only for a lone surrogate (or a non-finite number) is
    read by the standard library, so the event holding it is refused alone (``parse_event``)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        reason = str(error)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BatchError(400, "", f"not valid JSON: {reason}", "json_invalid") from None


def parse_event(index: int, raw: Any) -> EventIn | Rejection:
    """Type-check one event object; unknown extra fields are ignored."""
    if not isinstance(raw, dict):
        return _reject(index, None, "", "invalid_event", "an event must be a JSON object")
    event_id = raw.get("event_id")
    # the event_id is echoed in the answer: only when it can be (a lone surrogate cannot be encoded)
    own_id = event_id if isinstance(event_id, str) and event_id and storable(event_id) else None
    values: dict[str, str] = {}
    for name in ("event_id", "request_id", "app_id", "user_id"):
        value = _identifier(raw.get(name, None), name in raw)
        if isinstance(value, tuple):
            return _reject(index, own_id, name, *value)
        values[name] = value
    kind = raw.get("type")
    if kind not in EVENT_TYPES:
        code = "missing_field" if "type" not in raw else "unknown_type"
        return _reject(index, own_id, "type", code, f"must be 'impression' or 'download', got {kind!r}")
    ts = raw.get("ts")
    if ts is not None and not _valid_ts(ts):
        return _reject(
            index, own_id, "ts", "invalid_ts", f"must be a positive unix time in seconds, got {ts!r}"
        )
    event_type: EventType = kind
    return EventIn(
        index=index,
        event_id=values["event_id"],
        type=event_type,
        request_id=values["request_id"],
        app_id=values["app_id"],
        user_id=values["user_id"],
        ts=None if ts is None else float(ts),
    )


def _valid_ts(ts: Any) -> bool:
    """A positive finite number of seconds (an integer too large for a float is not)."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return False
    try:
        return math.isfinite(ts) and ts > 0
    except OverflowError:
        return False


def _identifier(value: Any, present: bool) -> str | tuple[str, str]:
    """An id as a string, or (code, reason). Integers are accepted and written in decimal."""
    if not present or value is None:
        return ("missing_field", "is required")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # then held to the same length as a string id
    if not isinstance(value, str):
        return ("invalid_field", f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        return ("invalid_field", f"must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    if not storable(value):
        return (UNSTORABLE, UNSTORABLE_MSG)
    return value


def check_reference(
    event: EventIn, served: ServedRef | None, received_at: float, skew: float = CLOCK_SKEW_S
) -> Rejection | None:
    """Check that an event refers to a served request, one of its returned items, and its user.

    ``skew`` is how far an event time may precede its served list or follow the server's clock.
    """
    if served is None:
        return _reject(
            event.index,
            event.event_id,
            "request_id",
            "unknown_request",
            f"no served list has request_id {event.request_id!r}",
        )
    if event.app_id not in served.app_ids:
        reason = f"app_id {event.app_id!r} is not among the items returned for request {event.request_id!r}"
        return _reject(event.index, event.event_id, "app_id", "unknown_item", reason)
    if event.user_id != served.user_id:
        reason = f"user_id {event.user_id!r} differs from the user of request {event.request_id!r}"
        return _reject(event.index, event.event_id, "user_id", "user_mismatch", reason)
    if event.ts is not None and event.ts < served.ts - skew:
        reason = f"event time {event.ts} precedes the served list ({served.ts}) by more than {skew:g} s"
        return _reject(event.index, event.event_id, "ts", "ts_before_served", reason)
    if event.ts is not None and event.ts > received_at + skew:
        reason = f"event time {event.ts} is more than {skew:g} s after the server's clock"
        return _reject(event.index, event.event_id, "ts", "ts_in_future", reason)
    return None


def _reject(index: int, event_id: str | None, field: str, code: str, reason: str) -> Rejection:
    path = f"events[{index}]" + (f".{field}" if field else "")
    return Rejection(index=index, event_id=event_id, field=path, code=code, reason=reason)
