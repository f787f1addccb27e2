"""Durable experiments with an audit history, on ``service.db.Database`` (SQLite or PostgreSQL).

Every change runs in one transaction that also bumps the ``experiments`` generation counter; workers
poll that counter (``generation``) to pick up changes made by any worker or replica. The same counter
table carries a ``models`` generation that asks every worker to reload its bundles.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from service.db import Cursor, Database, Migration
from service.experiments.models import AuditEntry, Experiment
from service.settings import DEFAULT_TABLE_PREFIX

EXPERIMENTS = "experiments"
MODELS = "models"


def migrations(prefix: str) -> list[Migration]:
    """The store's tables, for both dialects."""
    store = f"{prefix}experiments"
    return [
        Migration(
            store,
            1,
            f"CREATE TABLE {prefix}experiments (name TEXT PRIMARY KEY, config TEXT NOT NULL,"
            " version INTEGER NOT NULL);"
            f"CREATE TABLE {prefix}experiment_audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " experiment TEXT NOT NULL, action TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL,"
            " before_config TEXT, after_config TEXT);"
            f"CREATE INDEX {prefix}experiment_audit_name ON {prefix}experiment_audit (experiment, id);"
            f"CREATE TABLE {prefix}service_state (key TEXT PRIMARY KEY, value BIGINT NOT NULL);"
            f"INSERT INTO {prefix}service_state (key, value) VALUES ('{EXPERIMENTS}', 0), ('{MODELS}', 0)",
            f"CREATE TABLE {prefix}experiments (name TEXT PRIMARY KEY, config TEXT NOT NULL,"
            " version INTEGER NOT NULL);"
            f"CREATE TABLE {prefix}experiment_audit (id BIGSERIAL PRIMARY KEY,"
            " experiment TEXT NOT NULL, action TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL,"
            " before_config TEXT, after_config TEXT);"
            f"CREATE INDEX {prefix}experiment_audit_name ON {prefix}experiment_audit (experiment, id);"
            f"CREATE TABLE {prefix}service_state (key TEXT PRIMARY KEY, value BIGINT NOT NULL);"
            f"INSERT INTO {prefix}service_state (key, value) VALUES ('{EXPERIMENTS}', 0), ('{MODELS}', 0)",
        ),
        # One row that readiness checks rewrite: a committed write is the only proof that the database
        # takes writes (on SQLite a rolled-back one never touches the WAL file).
        Migration(
            store,
            2,
            f"CREATE TABLE {prefix}health (id INTEGER PRIMARY KEY, checks BIGINT NOT NULL);"
            f"INSERT INTO {prefix}health (id, checks) VALUES (1, 0)",
        ),
    ]


Change = Callable[[Experiment | None], Experiment]


class ExperimentStore:
    """Experiments, their audit and the change counters, in tables named ``{prefix}...``."""

    def __init__(self, db: Database, prefix: str = DEFAULT_TABLE_PREFIX) -> None:
        self.db = db
        self.prefix = prefix

    def migrate(self) -> None:
        self.db.migrate(migrations(self.prefix))

    def experiments(self) -> list[Experiment]:
        """All experiments, by name."""
        query = f"SELECT config FROM {self.prefix}experiments ORDER BY name"
        rows = self.db.query(lambda cursor: cursor.execute(query).fetchall())
        return [Experiment.model_validate_json(row[0]) for row in rows]

    def get(self, name: str) -> Experiment | None:
        query = self.db.sql(f"SELECT config FROM {self.prefix}experiments WHERE name = ?")
        row = self.db.query(lambda cursor: cursor.execute(query, (name,)).fetchone())
        return None if row is None else Experiment.model_validate_json(row[0])

    def save(self, name: str, actor: str, change: Change) -> tuple[Experiment, bool]:
        """Create or update ``name`` with ``change(current)`` in one audited transaction.

        Returns:
            The stored experiment and whether it was created.
        """
        with self.db.transaction() as cursor:
            self._bump(cursor, EXPERIMENTS)  # first: serializes concurrent writers on PostgreSQL too
            cursor.execute(
                self.db.sql(f"SELECT config FROM {self.prefix}experiments WHERE name = ?"), (name,)
            )
            row = cursor.fetchone()
            before = None if row is None else Experiment.model_validate_json(row[0])
            after = change(before)
            config = after.model_dump_json()
            if before is None:
                query = f"INSERT INTO {self.prefix}experiments (config, version, name) VALUES (?, ?, ?)"
            else:
                query = f"UPDATE {self.prefix}experiments SET config = ?, version = ? WHERE name = ?"
            cursor.execute(self.db.sql(query), (config, after.version, name))
            self._audit(cursor, name, "create" if before is None else "update", actor, before, after)
        return after, before is None

    def delete(self, name: str, actor: str) -> Experiment | None:
        """Delete ``name``; returns what was deleted, or None when it did not exist."""
        with self.db.transaction() as cursor:
            self._bump(cursor, EXPERIMENTS)
            cursor.execute(
                self.db.sql(f"SELECT config FROM {self.prefix}experiments WHERE name = ?"), (name,)
            )
            row = cursor.fetchone()
            if row is None:
                return None
            before = Experiment.model_validate_json(row[0])
            cursor.execute(self.db.sql(f"DELETE FROM {self.prefix}experiments WHERE name = ?"), (name,))
            self._audit(cursor, name, "delete", actor, before, None)
        return before

    def audit(self, name: str, limit: int = 1000) -> list[AuditEntry]:
        """The changes of ``name``, oldest first."""
        query = (
            f"SELECT id, experiment, action, actor, at, before_config, after_config "
            f"FROM {self.prefix}experiment_audit WHERE experiment = ? ORDER BY id LIMIT ?"
        )
        rows = self.db.query(lambda cursor: cursor.execute(self.db.sql(query), (name, limit)).fetchall())
        return [
            AuditEntry(
                id=row[0],
                experiment=row[1],
                action=row[2],
                actor=row[3],
                at=datetime.fromisoformat(row[4]),
                before=None if row[5] is None else Experiment.model_validate_json(row[5]),
                after=None if row[6] is None else Experiment.model_validate_json(row[6]),
            )
            for row in rows
        ]

    def generations(self) -> dict[str, int]:
        """The change counters (``experiments``, ``models``): cheap enough to poll twice a second."""
        query = f"SELECT key, value FROM {self.prefix}service_state"
        rows = self.db.query(lambda cursor: cursor.execute(query).fetchall())
        return {str(row[0]): int(row[1]) for row in rows}

    def check_writable(self) -> None:
        """Commit a one-row write (the readiness check).

        Raises:
            StoreUnavailableError: the database cannot be written now.
        """
        with self.db.transaction() as cursor:
            cursor.execute(f"UPDATE {self.prefix}health SET checks = checks + 1 WHERE id = 1")

    def bump(self, key: str) -> None:
        """Increase a change counter (``models``: ask every worker to reload)."""
        with self.db.transaction() as cursor:
            self._bump(cursor, key)

    def _bump(self, cursor: Cursor, key: str) -> None:
        cursor.execute(
            self.db.sql(f"UPDATE {self.prefix}service_state SET value = value + 1 WHERE key = ?"), (key,)
        )

    def _audit(
        self,
        cursor: Cursor,
        name: str,
        action: str,
        actor: str,
        before: Experiment | None,
        after: Experiment | None,
    ) -> None:
        cursor.execute(
            self.db.sql(
                f"INSERT INTO {self.prefix}experiment_audit "
                "(experiment, action, actor, at, before_config, after_config) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (name, action, actor, datetime.now(UTC).isoformat(), _json(before), _json(after)),
        )


def _json(experiment: Experiment | None) -> str | None:
    return None if experiment is None else orjson.dumps(experiment.model_dump(mode="json")).decode()
