"""The event log's SQL, one text for both dialects (``?`` placeholders, see ``Database.sql``).

Only portable constructs are used: ``ON CONFLICT``, ``RETURNING``, ``VALUES`` lists whose columns are
``column1, column2`` in both SQLite and PostgreSQL, and ``CASE`` rather than boolean arithmetic. Table
names carry the service's table prefix (``{p}``), like every other store of the service.
"""

from __future__ import annotations

EVENT_COLUMNS = "event_id, type, request_id, app_id, user_id, ts, day, received_at, experiment, arm"
EVENT_WIDTH = 10
_EVENT_VALUES = f"({', '.join('?' * EVENT_WIDTH)})"

_INSERT_SERVED_LISTS = (
    "INSERT INTO {p}served_lists (request_id, ts, experiment, arm, bucket, model, version, objective, "
    "user_id, user_json, context_json) VALUES {values} ON CONFLICT DO NOTHING"
)
_INSERT_SERVED_ITEMS = (
    "INSERT INTO {p}served_items (request_id, position, app_id, ctr, bid, feature_id) "
    "VALUES {values} ON CONFLICT DO NOTHING"
)
_INSERT_ITEM_FEATURES = (
    "INSERT INTO {p}item_features (feature_id, app_id, features_json) VALUES {values} ON CONFLICT DO NOTHING"
)
ITEM_FEATURES_WIDTH = 3
SERVED_LIST_WIDTH = 11
SERVED_ITEM_WIDTH = 6
_INSERT_EVENT_UNCHECKED = (
    f"INSERT INTO {{p}}events ({EVENT_COLUMNS}) VALUES {_EVENT_VALUES} ON CONFLICT DO NOTHING"
)
_UPSERT_USER_DAY = (
    "INSERT INTO {p}event_user_days (experiment, arm, user_id, day, impressions, downloads) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (experiment, arm, user_id, day) DO UPDATE SET "
    "impressions = {p}event_user_days.impressions + excluded.impressions, "
    "downloads = {p}event_user_days.downloads + excluded.downloads"
)
_REBUILD_USER_DAYS = (
    "INSERT INTO {p}event_user_days (experiment, arm, user_id, day, impressions, downloads) "
    "SELECT experiment, arm, user_id, day, "
    "SUM(CASE WHEN type = 'impression' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN type = 'download' THEN 1 ELSE 0 END) "
    "FROM {p}events GROUP BY experiment, arm, user_id, day"
)

# Per arm, overall (day NULL) and per day: users, sum I, sum D, sum I^2, sum D^2, sum I*D over users,
# where I and D are a user's impressions and downloads (over the window, or on that day).
_ARM_SUMS = """
SELECT arm, NULL AS day, COUNT(*), SUM(i), SUM(d), SUM(i * i), SUM(d * d), SUM(i * d)
FROM (
    SELECT arm, user_id, SUM(impressions) AS i, SUM(downloads) AS d
    FROM {p}event_user_days WHERE experiment = ? AND day >= ? AND day <= ?
    GROUP BY arm, user_id
) AS per_user
GROUP BY arm
UNION ALL
SELECT arm, day, COUNT(*), SUM(impressions), SUM(downloads), SUM(impressions * impressions),
       SUM(downloads * downloads), SUM(impressions * downloads)
FROM {p}event_user_days WHERE experiment = ? AND day >= ? AND day <= ?
GROUP BY day, arm
"""

# Impressions joined with their served list, served item and download (if any), in (ts, event_id)
# order, one page at a time (keyset pagination: no server-side cursor needed in either dialect). The
# lower bound is the larger of the window's start and the last page's ts (the caller passes it): the
# planners seek the ts index with the plain range only, the ``OR`` is a filter, so a bound at the
# window's start alone would scan every earlier page again (quadratic in the window).
_LABELED_JOINS = """
FROM {p}events AS e
JOIN {p}served_lists AS l ON l.request_id = e.request_id
JOIN {p}served_items AS i ON i.request_id = e.request_id AND i.app_id = e.app_id
JOIN {p}item_features AS f ON f.feature_id = i.feature_id
LEFT JOIN {p}events AS d ON d.request_id = e.request_id AND d.app_id = e.app_id AND d.type = 'download'
WHERE e.type = 'impression' AND e.experiment = ? AND e.ts >= ? AND e.ts < ?
  AND (e.ts > ? OR (e.ts = ? AND e.event_id > ?))
ORDER BY e.ts, e.event_id
LIMIT ?
"""
_LABELED_PAGE = (
    """
SELECT e.ts, e.event_id, e.request_id, e.app_id, e.user_id, l.arm, l.model, l.version, l.user_json,
       l.context_json, i.position, i.ctr, i.bid, f.features_json,
       CASE WHEN d.event_id IS NULL THEN 0 ELSE 1 END AS label"""
    + _LABELED_JOINS
)
# The same rows with only what training reads (``rows.TrainingPage``): user and app ids, the raw JSON
# of user, context and item, the label.
_TRAINING_PAGE = (
    """
SELECT e.ts, e.event_id, e.user_id, e.app_id, l.user_json, l.context_json, f.features_json,
       CASE WHEN d.event_id IS NULL THEN 0 ELSE 1 END AS label"""
    + _LABELED_JOINS
)

_SERVED_MODELS = (
    "SELECT DISTINCT model, version FROM {p}served_lists WHERE experiment = ? AND ts >= ? AND ts < ? "
    "ORDER BY model, version"
)

_USER_COUNTS = (
    "SELECT experiment, arm, COUNT(DISTINCT user_id) FROM {p}event_user_days GROUP BY experiment, arm"
)

_PURGE = (
    (
        "served_items",
        "DELETE FROM {p}served_items WHERE request_id IN "
        "(SELECT request_id FROM {p}served_lists WHERE ts < ?)",
    ),
    ("served_lists", "DELETE FROM {p}served_lists WHERE ts < ?"),
    ("item_features", ""),  # dialect-specific, no parameter: see ``Queries.purge_features``
    ("events", "DELETE FROM {p}events WHERE ts < ?"),
    ("user_days", "DELETE FROM {p}event_user_days WHERE day < ?"),
)

_INSERT_EVENTS_RETURNING = (
    "INSERT INTO {p}events (" + EVENT_COLUMNS + ") VALUES {values} ON CONFLICT DO NOTHING "
    "RETURNING event_id, request_id, app_id, type"
)
_SERVED_REFS = (
    "SELECT l.request_id, l.user_id, l.experiment, l.arm, l.ts, i.app_id "
    "FROM (VALUES {values}) AS p "
    "JOIN {p}served_lists AS l ON l.request_id = p.column1 "
    "LEFT JOIN {p}served_items AS i ON i.request_id = p.column1 AND i.app_id = p.column2"
)

_STORED_EVENTS = (
    "SELECT e.event_id, e.type, e.request_id, e.app_id, e.user_id "
    "FROM (VALUES {values}) AS p JOIN {p}events AS e ON e.event_id = p.column1"
)

_STORED_TRIPLES = (
    "SELECT e.request_id, e.app_id, e.type "
    "FROM (VALUES {values}) AS p "
    "JOIN {p}events AS e ON e.request_id = p.column1 AND e.app_id = p.column2 AND e.type = p.column3"
)


# The feature versions no served item refers to any more. SQLite evaluates ``NOT IN`` once into a
# temporary index; PostgreSQL plans ``NOT EXISTS`` as a hash anti-join (its ``NOT IN`` would not be hashed
# beyond work_mem), after a lock that waits for (and holds off) the writers' inserts, so that a version
# reused by a list written meanwhile is never deleted under it.
_PURGE_FEATURES_SQLITE = (
    "DELETE FROM {p}item_features WHERE feature_id NOT IN (SELECT feature_id FROM {p}served_items)"
)
_PURGE_FEATURES_POSTGRES = (
    "LOCK TABLE {p}item_features IN SHARE ROW EXCLUSIVE MODE;"
    "DELETE FROM {p}item_features AS f WHERE NOT EXISTS "
    "(SELECT 1 FROM {p}served_items AS i WHERE i.feature_id = f.feature_id)"
)


class Queries:
    """Every statement of the event log for one table prefix, in portable ``?`` form."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.insert_event_unchecked = _INSERT_EVENT_UNCHECKED.format(p=prefix)
        self.upsert_user_day = _UPSERT_USER_DAY.format(p=prefix)
        self.clear_user_days = f"DELETE FROM {prefix}event_user_days"
        self.rebuild_user_days = _REBUILD_USER_DAYS.format(p=prefix)
        self.arm_sums = _ARM_SUMS.format(p=prefix)
        self.labeled_page = _LABELED_PAGE.format(p=prefix)
        self.training_page = _TRAINING_PAGE.format(p=prefix)
        self.served_models = _SERVED_MODELS.format(p=prefix)
        self.user_counts = _USER_COUNTS.format(p=prefix)
        self.purge = tuple((name, statement.format(p=prefix)) for name, statement in _PURGE)
        self.purge_features = {
            "sqlite": [_PURGE_FEATURES_SQLITE.format(p=prefix)],
            "postgresql": _PURGE_FEATURES_POSTGRES.format(p=prefix).split(";"),
        }
        self._cache: dict[tuple[str, int], str] = {}

    def insert_served_lists(self, rows: int) -> str:
        """A multi-row insert of ``rows`` served lists."""
        return self._multi_row(_INSERT_SERVED_LISTS, SERVED_LIST_WIDTH, rows)

    def insert_served_items(self, rows: int) -> str:
        """A multi-row insert of ``rows`` served items (one SQL step for all: see ``write_served``)."""
        return self._multi_row(_INSERT_SERVED_ITEMS, SERVED_ITEM_WIDTH, rows)

    def insert_item_features(self, rows: int) -> str:
        """A multi-row insert of ``rows`` item feature versions (those already stored are kept)."""
        return self._multi_row(_INSERT_ITEM_FEATURES, ITEM_FEATURES_WIDTH, rows)

    def insert_events_returning(self, rows: int) -> str:
        """A multi-row event insert returning the rows actually inserted (id, request, app, type)."""
        return self._multi_row(_INSERT_EVENTS_RETURNING, EVENT_WIDTH, rows)

    def served_refs(self, pairs: int) -> str:
        """The served list of each (request_id, app_id) pair, with the app_id when it was returned."""
        return self._multi_row(_SERVED_REFS, 2, pairs)

    def stored_events(self, ids: int) -> str:
        """The stored content (id, type, request, app, user) of each of ``ids`` event_ids."""
        return self._multi_row(_STORED_EVENTS, 1, ids)

    def stored_triples(self, triples: int) -> str:
        """Which of ``triples`` (request_id, app_id, type) are stored, under whatever event_id."""
        return self._multi_row(_STORED_TRIPLES, 3, triples)

    def _multi_row(self, template: str, width: int, rows: int) -> str:
        """``template`` with ``{values}`` as ``rows`` tuples of ``width`` placeholders (cached)."""
        key = (template, rows)
        if key not in self._cache:
            values = ", ".join([f"({', '.join('?' * width)})"] * rows)
            self._cache[key] = template.format(p=self.prefix, values=values)
        return self._cache[key]
