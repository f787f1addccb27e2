"""What /rank hands to the event log: the served list, cheap to build on the hot path.

``/rank`` builds one ``ServedList`` per response from objects it already has (the parsed candidate
columns, the order and the CTR array) and calls ``ServedListSink.submit``, which must never block: the
event log materializes rows (one per returned item, with its raw features) in a background writer.

What is logged of the raw features is bounded (``logged_json``, in the writer): only the serving
model's schema fields (``LoggedFields``), each string cut to ``MAX_LOGGED_CHARS`` and each list to
``MAX_LOGGED_ITEMS`` items, every drop and cut counted (``apprank_served_values_cut_total``). Unknown
keys and huge values would otherwise go to the database verbatim, and SQLite keeps the last values
bound to each cached statement, so they would also stay in the worker's memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

MAX_LOGGED_CHARS = 1024
MAX_LOGGED_ITEMS = 256
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class LoggedFields:
    """The feature names a served list logs, by source: the serving model's schema fields."""

    user: frozenset[str]
    context: frozenset[str]
    item: frozenset[str]


@dataclass(frozen=True, slots=True)
class ServedList:
    """One /rank response as served.

    Attributes:
        request_id: the response's request_id (events refer to it).
        ts: unix time (seconds) when the response was built.
        experiment, arm, bucket: the A/B assignment of the user.
        model, version: the bundle that scored.
        objective: ``ctr`` or ``ctr_bid``.
        user_id: the request's user_id.
        user, context: the raw user and context feature objects of the request.
        app_ids: the candidates' app_ids, in request order.
        bids: the candidates' bids (NaN where absent), or None when no candidate has one.
        features: the candidates' raw item feature objects (``{}`` where absent).
        order: indices into the candidates of the returned items, best first (length = top_k).
        ctr: predicted CTR of every candidate (request order), float32.
        fields: the schema fields to log; None logs every key (values are capped either way).
    """

    request_id: str
    ts: float
    experiment: str
    arm: str
    bucket: int
    model: str
    version: str
    objective: str
    user_id: str
    user: Mapping[str, Any]
    context: Mapping[str, Any]
    app_ids: Sequence[str]
    bids: npt.NDArray[np.float64] | None
    features: Sequence[Mapping[str, Any]]
    order: npt.NDArray[np.int64]
    ctr: npt.NDArray[np.float32]
    fields: LoggedFields | None = None


class ServedListSink(Protocol):
    """Receives served lists; ``submit`` returns at once (queue or drop-and-count, never wait)."""

    def submit(self, served: ServedList) -> None: ...


class NullSink:
    """Discards served lists (used when no event store is configured, and in unit tests)."""

    def submit(self, served: ServedList) -> None:
        del served


def logged_json(values: Mapping[str, Any], fields: frozenset[str] | None) -> str:
    """The JSON text logged for a raw feature object: ``fields`` only (None: every key), values capped.

    The common case costs one C call for the keys and one for the text: only a text longer than
    ``MAX_LOGGED_CHARS`` can hold a value to cut, so only such a one is walked.
    """
    if fields is not None and not fields.issuperset(values):
        kept = {key: value for key, value in values.items() if key in fields}
        _count_cut("unknown_field", len(values) - len(kept))
        values = kept
    text = orjson.dumps(values, option=_JSON_OPTIONS).decode()
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    capped = {key: _capped(value) for key, value in values.items()}
    cut = sum(capped[key] is not value for key, value in values.items())
    if not cut:
        return text
    _count_cut("too_long", cut)
    return orjson.dumps(capped, option=_JSON_OPTIONS).decode()


def _count_cut(reason: str, values: int) -> None:
    # imported here: service.metrics imports the event log, whose rows import this module
    from service.metrics import SERVED_VALUES_CUT

    SERVED_VALUES_CUT.labels(reason).inc(values)


def _capped(value: Any) -> Any:
    """``value`` itself when within the caps, else a cut copy (strings, lists; other objects as
    their JSON text, cut)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_LOGGED_CHARS else value[:MAX_LOGGED_CHARS]
    if isinstance(value, list | tuple):
        items = [_capped(item) for item in value[:MAX_LOGGED_ITEMS]]
        same = len(value) <= MAX_LOGGED_ITEMS and all(a is b for a, b in zip(items, value, strict=False))
        return value if same else items
    if isinstance(value, dict):
        text = orjson.dumps(value, option=_JSON_OPTIONS).decode()
        return value if len(text) <= MAX_LOGGED_CHARS else text[:MAX_LOGGED_CHARS]
    return value
