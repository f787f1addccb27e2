"""One narrow database layer for the service's stores: SQLite (embedded default) or PostgreSQL.

Stores write portable SQL with ``?`` placeholders; ``Database.sql`` rewrites them for psycopg. Each store
declares its tables as a list of migrations (one per dialect where they differ) and calls ``migrate``,
which applies the ones not yet recorded in ``apprank_migrations``, under a lock, so several workers or
replicas starting at once apply each migration exactly once.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``postgresql://user@host:port/db``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
_PLACEHOLDER = re.compile(r"\?")


class Cursor(Protocol):
    """What stores use of a DB-API cursor (sqlite3 and psycopg both satisfy it)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Migration:
    """A numbered schema change of one store; ``postgresql`` overrides ``sqlite`` when given."""

    store: str
    number: int
    sqlite: str
    postgresql: str | None = None

    def text(self, dialect: Dialect) -> str:
        return self.postgresql if dialect == "postgresql" and self.postgresql is not None else self.sqlite


class Database:
    """A connection factory plus the dialect's small differences.

    SQLite: one connection per thread, WAL journal, ``synchronous=FULL`` (a commit is on disk), a busy
    timeout so concurrent writers wait instead of failing. PostgreSQL: a psycopg connection pool.
    """

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self.dialect: Dialect
        self._local = threading.local()
        self._pool: Any = None
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = Path(url.removeprefix("sqlite:///"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            from psycopg_pool import ConnectionPool  # imported lazily: SQLite-only installs skip it

            self.dialect = "postgresql"
            self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, timeout=10)
        else:
            raise ValueError(f"database url must start with sqlite:/// or postgresql://, got {url!r}")

    def sql(self, query: str) -> str:
        """Rewrite ``?`` placeholders into the dialect's style."""
        return _PLACEHOLDER.sub("%s", query) if self.dialect == "postgresql" else query

    def _sqlite(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA busy_timeout=30000")
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error."""
        if self.dialect == "sqlite":
            connection = self._sqlite()
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
            return
        with self._pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
            yield cursor

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        """A cursor for queries (no write lock taken on SQLite)."""
        if self.dialect == "sqlite":
            yield self._sqlite().cursor()
            return
        with self._pool.connection() as connection, connection.cursor() as cursor:
            yield cursor

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.read() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() is not None
        except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
            return False

    def migrate(self, migrations: Sequence[Migration]) -> None:
        """Apply the migrations not yet applied, in order, each exactly once across processes."""
        with self.transaction() as cursor:
            if self.dialect == "postgresql":
                cursor.execute("SELECT pg_advisory_xact_lock(727170)")
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS apprank_migrations "
                "(store TEXT NOT NULL, number INTEGER NOT NULL, PRIMARY KEY (store, number))"
            )
            cursor.execute(self.sql("SELECT store, number FROM apprank_migrations"))
            done = {(row[0], row[1]) for row in cursor.fetchall()}
            for migration in sorted(migrations, key=lambda m: (m.store, m.number)):
                if (migration.store, migration.number) in done:
                    continue
                for statement in _statements(migration.text(self.dialect)):
                    cursor.execute(statement)
                cursor.execute(
                    self.sql("INSERT INTO apprank_migrations (store, number) VALUES (?, ?)"),
                    (migration.store, migration.number),
                )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
