"""Tables of the event log, as migrations of the store ``events`` (see ``service.db.Migration``).

One SQL text serves both dialects except where SQLite and PostgreSQL differ (``WITHOUT ROWID``).
Types are spelled so that both accept them: ``DOUBLE PRECISION`` is REAL in SQLite, ``BIGINT`` INTEGER.
Every name carries the service's table prefix (``apprank_`` by default).

* ``served_lists``: one row per /rank response (raw user and context JSON).
* ``served_items``: one row per returned item (position, predicted CTR, bid, and the ``feature_id`` of
  its logged features); a clustered (``WITHOUT ROWID``) table on SQLite, one B-tree to grow per insert
  instead of two.
* ``item_features`` (migration 4): the logged raw features of an app, once per distinct (app, features)
  version (``service.events.record.feature_version``), which served items refer to instead of repeating
  them in every list. Versions no item refers to any more go with the retention purge.
* ``events``: impressions and downloads. ``experiment``, ``arm`` and ``day`` are copied from the served
  list at ingestion (denormalized) so that the report never joins. ``(request_id, app_id, type)`` is
  unique: an item of a served list is shown at most once and downloaded at most once, which keeps
  CTR a ratio of counts in [0, 1] whatever clients resend.
* ``event_user_days``: per (experiment, arm, user, day) counts of the events, maintained in the same
  transaction as the event inserts. The report aggregates this table (users x days rows), never the raw
  events, which is what makes a report over ten million impressions take about a second.
"""

from __future__ import annotations

from service.db import Migration

_TABLES = """
CREATE TABLE {p}served_lists (
    request_id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    objective TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_json TEXT NOT NULL,
    context_json TEXT NOT NULL
);
CREATE INDEX {p}served_lists_ts ON {p}served_lists (ts);
CREATE TABLE {p}served_items (
    request_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    app_id TEXT NOT NULL,
    ctr DOUBLE PRECISION NOT NULL,
    bid DOUBLE PRECISION,
    features_json TEXT NOT NULL,
    PRIMARY KEY (request_id, app_id)
){items_suffix};
CREATE TABLE {p}events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('impression', 'download')),
    request_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    day INTEGER NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL
);
CREATE UNIQUE INDEX {p}events_item_type ON {p}events (request_id, app_id, type);
CREATE INDEX {p}events_ts ON {p}events (ts)
"""

_ROLLUP = """
CREATE TABLE {p}event_user_days (
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    user_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    impressions BIGINT NOT NULL,
    downloads BIGINT NOT NULL,
    PRIMARY KEY (experiment, arm, user_id, day)
){suffix};
CREATE INDEX {p}event_user_days_by_day ON {p}event_user_days (experiment, day, arm, impressions, downloads)
"""

# The report's download rule (a download counts only with an impression of its (request, app)) looks up
# every download of its days: a partial index keeps that a range of downloads, not a pass over the events.
_DOWNLOADS_BY_DAY = """
CREATE INDEX {p}events_downloads_by_day ON {p}events (day, request_id, app_id) WHERE type = 'download'
"""


# Migration 4: item features stored once per (app, features) version. Rows already stored get versions
# numbered here (``m1``, ``m2``, ... : SQL has no BLAKE2b), so they are not shared with the hashed ids of
# later writes; a version is then stored at most twice. SQLite cannot drop a NOT NULL column of a
# WITHOUT ROWID table in place: the items table is rebuilt (the same text suits PostgreSQL).
_ITEM_FEATURES = """
CREATE TABLE {p}item_features (
    feature_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    features_json TEXT NOT NULL
){suffix};
INSERT INTO {p}item_features (feature_id, app_id, features_json)
SELECT 'm' || CAST(ROW_NUMBER() OVER (ORDER BY app_id, features_json) AS TEXT), app_id, features_json
FROM (SELECT DISTINCT app_id, features_json FROM {p}served_items) AS versions;
CREATE TABLE {p}served_items_v4 (
    request_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    app_id TEXT NOT NULL,
    ctr DOUBLE PRECISION NOT NULL,
    bid DOUBLE PRECISION,
    feature_id TEXT NOT NULL,
    PRIMARY KEY (request_id, app_id)
){suffix};
INSERT INTO {p}served_items_v4 (request_id, position, app_id, ctr, bid, feature_id)
SELECT i.request_id, i.position, i.app_id, i.ctr, i.bid, f.feature_id
FROM {p}served_items AS i
JOIN {p}item_features AS f ON f.app_id = i.app_id AND f.features_json = i.features_json;
DROP TABLE {p}served_items;
ALTER TABLE {p}served_items_v4 RENAME TO {p}served_items
"""


def migrations(prefix: str) -> list[Migration]:
    """The event log's tables named ``{prefix}...``; the migration store is ``{prefix}events``."""
    store = f"{prefix}events"
    return [
        Migration(
            store,
            1,
            _TABLES.format(p=prefix, items_suffix=" WITHOUT ROWID"),
            _TABLES.format(p=prefix, items_suffix=""),
        ),
        Migration(
            store,
            2,
            _ROLLUP.format(p=prefix, suffix=" WITHOUT ROWID"),
            _ROLLUP.format(p=prefix, suffix=""),
        ),
        Migration(store, 3, _DOWNLOADS_BY_DAY.format(p=prefix)),
        Migration(
            store,
            4,
            _ITEM_FEATURES.format(p=prefix, suffix=" WITHOUT ROWID"),
            _ITEM_FEATURES.format(p=prefix, suffix=""),
        ),
    ]
