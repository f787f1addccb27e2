"""Tables of the event log, as migrations of the store ``events`` (see ``service.db.Migration``).

One SQL text serves both dialects except where SQLite and PostgreSQL differ (``WITHOUT ROWID``).
Types are spelled so that both accept them: ``DOUBLE PRECISION`` is REAL in SQLite, ``BIGINT`` INTEGER.
Every name carries the service's table prefix (``apprank_`` by default).

* ``served_lists``: one row per /rank response (raw user and context JSON).
* ``served_items``: one row per returned item (position, predicted CTR, bid, raw item features JSON);
  a clustered (``WITHOUT ROWID``) table on SQLite, one B-tree to grow per insert instead of two.
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
    ]
