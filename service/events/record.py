"""The served-list record: what /rank's request thread encodes (msgpack) for the writer process.

A record holds what the report, the event checks and ``export-training`` read of a served list, and
nothing of the candidates that were not returned:

* the identity of the response: request_id, time, experiment, arm, bucket, model, version, objective,
  user_id;
* the request's raw user and context objects;
* the returned items, best first: app_ids, predicted CTRs (float32 bytes), bids (float64 bytes, NaN
  where absent; none at all when no candidate had one) and raw item feature objects;
* the schema fields the serving model logs (``LoggedFields``), encoded once per model and copied in.

Building it costs the request thread a few C calls (a gather of the returned items, one msgpack
encode); selecting the logged fields, capping values and rendering JSON happen in the writer process
(``ServedRecord.rows``), off the worker's GIL.
"""

from __future__ import annotations

import hashlib
import math
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np

from service.rank.served import LoggedFields, ServedList, logged_json

NO_FIELDS = msgspec.Raw(b"\xc0")  # msgpack nil: log every key
ListRow = tuple[Any, ...]
ItemRow = tuple[Any, ...]
FeatureRow = tuple[str, str, str]


class _RecordHead(msgspec.Struct, array_like=True, frozen=True):
    """The list's identity fields, first on the wire in both record types below."""

    request_id: str
    ts: float
    experiment: str
    arm: str
    bucket: int
    model: str
    version: str
    objective: str
    user_id: str


class ServedRecord(_RecordHead, array_like=True, frozen=True):
    """One served list as the writer reads it (see the module's doc for what it holds).

    ``features`` stays one msgpack encoding per item: the writer decodes an item's features only the
    first time it meets that (app, encoding) (``FeatureVersions``).
    """

    user: dict[str, Any]
    context: dict[str, Any]
    app_ids: list[str]
    ctr: bytes
    bids: bytes | None
    features: list[msgspec.Raw]
    fields: msgspec.Raw = NO_FIELDS  # (msgspec decodes a Raw alone, not in a union)

    def rows(
        self, fields: LoggedFields | None, versions: FeatureVersions
    ) -> tuple[ListRow, list[ItemRow], list[FeatureRow]]:
        """The ``served_lists`` row, the ``served_items`` rows (1-based positions, best first) and the
        ``item_features`` rows of the list's (app, logged features) versions.

        What is logged is ``logged_json`` of the raw objects with ``fields`` (the record's own, decoded
        by ``FieldsCache``); an item refers to its logged features by ``feature_id``.
        """
        list_row = (
            self.request_id,
            float(self.ts),
            self.experiment,
            self.arm,
            int(self.bucket),
            self.model,
            self.version,
            self.objective,
            str(self.user_id),
            logged_json(self.user, None if fields is None else fields.user),
            logged_json(self.context, None if fields is None else fields.context),
        )
        ctrs = np.frombuffer(self.ctr, dtype=np.float32).astype(float).tolist()
        bids = np.frombuffer(self.bids, dtype=np.float64).tolist() if self.bids is not None else None
        items: list[ItemRow] = []
        features: list[FeatureRow] = []
        version = versions.version
        for position, (app_id, ctr, raw) in enumerate(zip(self.app_ids, ctrs, self.features, strict=True)):
            row = version(self.fields, fields, app_id, raw)
            features.append(row)
            bid = None if bids is None or math.isnan(bids[position]) else bids[position]
            items.append((self.request_id, position + 1, app_id, ctr, bid, row[0]))
        return list_row, items, features


class _OutgoingRecord(_RecordHead, array_like=True, frozen=True):
    """``ServedRecord`` as the request thread encodes it: the same fields, features as objects."""

    user: Any
    context: Any
    app_ids: list[str]
    ctr: bytes
    bids: bytes | None
    features: list[Any]
    fields: msgspec.Raw


class FeatureVersions:
    """(app, features) versions met so far, by their encodings: the feature_id and logged JSON of an
    item are computed once per distinct (logged fields, app, features encoding). Bounded: forgets all
    past ``max_entries`` (then computes them again)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._known: dict[tuple[bytes, str, bytes], FeatureRow] = {}
        self._max = max_entries

    def version(
        self, fields_raw: msgspec.Raw, fields: LoggedFields | None, app_id: str, raw: msgspec.Raw
    ) -> FeatureRow:
        key = (bytes(fields_raw), app_id, bytes(raw))
        row = self._known.get(key)
        if row is None:
            text = logged_json(_RAW_DECODER.decode(raw), None if fields is None else fields.item)
            row = (feature_version(app_id, text), app_id, text)
            if len(self._known) >= self._max:
                self._known.clear()
            self._known[key] = row
        return row


def feature_version(app_id: str, features_json: str) -> str:
    """The id of one (app, logged features) version: 128 bits of BLAKE2b over both (hex)."""
    digest = hashlib.blake2b(app_id.encode(), digest_size=16)
    digest.update(b"\x00")
    digest.update(features_json.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class RecordEncoder:
    """Encodes served lists into records on the request thread (one per producer; not thread-safe
    for ``fields``' first sight, which only costs a duplicate encode)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._fields: dict[int, tuple[LoggedFields, msgspec.Raw]] = {}

    def encode(self, served: ServedList) -> bytes:
        """The msgpack bytes of ``served``'s record."""
        return self._encoder.encode(self.record(served))

    def record(self, served: ServedList) -> _OutgoingRecord:
        order = served.order
        count = len(order)
        if count == 1:
            index = int(order[0])
            app_ids, features = [served.app_ids[index]], [served.features[index]]
        elif count:
            pick = itemgetter(*order.tolist())
            app_ids, features = list(pick(served.app_ids)), list(pick(served.features))
        else:
            app_ids, features = [], []
        bids = None if served.bids is None else served.bids[order].tobytes()
        return _OutgoingRecord(
            served.request_id,
            served.ts,
            served.experiment,
            served.arm,
            served.bucket,
            served.model,
            served.version,
            served.objective,
            served.user_id,
            served.user,
            served.context,
            app_ids,
            served.ctr[order].tobytes(),
            bids,
            features,
            self._fields_raw(served.fields),
        )

    def _fields_raw(self, fields: LoggedFields | None) -> msgspec.Raw:
        if fields is None:
            return NO_FIELDS
        known = self._fields.get(id(fields))
        if known is None or known[0] is not fields:
            raw = msgspec.Raw(
                self._encoder.encode([sorted(fields.user), sorted(fields.context), sorted(fields.item)])
            )
            known = (fields, raw)  # keeps ``fields`` alive, so its id is not reused
            self._fields[id(fields)] = known
        return known[1]


_DECODER = msgspec.msgpack.Decoder(ServedRecord)
_RAW_DECODER = msgspec.msgpack.Decoder(dict[str, Any])
_FIELDS_DECODER = msgspec.msgpack.Decoder(tuple[list[str], list[str], list[str]])


def decode_record(data: bytes) -> ServedRecord:
    """The record in ``data`` (``msgspec.ValidationError`` or ``DecodeError`` when it is not one)."""
    return _DECODER.decode(data)


class FieldsCache:
    """Decodes the ``fields`` of records, once per distinct encoding (one per serving model)."""

    def __init__(self) -> None:
        self._known: dict[bytes, LoggedFields] = {}

    def fields(self, record: ServedRecord) -> LoggedFields | None:
        key = bytes(record.fields)
        if key == b"\xc0":
            return None
        known = self._known.get(key)
        if known is None:
            user, context, item = _FIELDS_DECODER.decode(key)
            known = LoggedFields(frozenset(user), frozenset(context), frozenset(item))
            self._known[key] = known
        return known


def record_of(served: ServedList | ServedRecord) -> ServedRecord:
    """``served`` as a record, through the same encoding as the request thread's (in-process callers:
    tests, benchmarks, the thread writer)."""
    if isinstance(served, ServedRecord):
        return served
    return decode_record(_IN_PROCESS.encode(served))


_IN_PROCESS = RecordEncoder()
