"""One narrow database layer for the service's stores: SQLite (embedded default) or PostgreSQL.

Stores write portable SQL with ``?`` placeholders; ``Database.sql`` rewrites them for psycopg. Each store
declares its tables as a list of migrations (one per dialect where they differ) and calls ``migrate``,
which applies the ones not yet recorded in ``apprank_migrations``, under a lock, so several workers or
replicas starting at once apply each migration exactly once.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``postgresql://user@host:port/db``.

Faults of the database itself (a terminated PostgreSQL connection, an SQLite file made read-only, a
lock held too long) leave ``transaction``, ``read`` and ``query`` as ``StoreUnavailableError``: a 503
with ``Retry-After`` wherever it reaches a route. The connection that failed is not reused: PostgreSQL's
pool checks each connection when it is handed out, and an SQLite thread connection is closed after such a
fault and reopened by the next call, so a worker recovers when the database does, without a restart.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from service.errors import FieldIssue, RequestError

T = TypeVar("T")
Dialect = Literal["sqlite", "postgresql"]
_PLACEHOLDER = re.compile(r"\?")
RETRY_AFTER_S = 1
# SQLite primary result codes of faults that pass (the file writable again, the lock released): BUSY,
# LOCKED, READONLY, IOERR, FULL, CANTOPEN. After READONLY, IOERR or CANTOPEN the connection is reopened:
# one opened while the file was unwritable stays read-only for good.
_SQLITE_TRANSIENT = {5, 6, 8, 10, 13, 14}
_SQLITE_REOPEN = {8, 10, 14}
# PostgreSQL: shut down or terminated (57P01-57P05), read-only server (25006), lock or statement timeout
# (55P03, 57014).
_PG_TRANSIENT_STATES = {"57P01", "57P02", "57P03", "57P05", "25006", "55P03", "57014"}


class StoreUnavailableError(RequestError):
    """The database cannot serve now (connection lost, file unwritable, lock timeout): retry later."""

    def __init__(self, cause: BaseException) -> None:
        msg = f"the database is unavailable ({type(cause).__name__}); retry later"
        super().__init__(503, [FieldIssue((), msg, "unavailable")], {"Retry-After": str(RETRY_AFTER_S)})
        self.cause = cause
        # a lost or reopened connection: an attempt on a fresh one may succeed at once (a lock or
        # statement timeout would only wait as long again)
        self.reconnects = _reconnects(cause)

    def __str__(self) -> str:
        return f"database unavailable: {type(self.cause).__name__}: {self.cause}"


def is_transient(error: BaseException) -> bool:
    """True for faults of the database that a later attempt may no longer meet; False for bad data or SQL."""
    if isinstance(error, StoreUnavailableError):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return _sqlite_code(error) in _SQLITE_TRANSIENT
    return _is_pg_connection_error(error) or _is_pg_rollback(error)


def _reconnects(cause: BaseException) -> bool:
    if isinstance(cause, sqlite3.OperationalError):
        return _sqlite_code(cause) in _SQLITE_REOPEN
    state = getattr(cause, "sqlstate", None)
    return _is_pg_connection_error(cause) and (state is None or state.startswith("08") or state[:3] == "57P")


def is_data_error(error: BaseException) -> bool:
    """True when the values, not the database, are at fault (a NUL or a lone surrogate in a text, a
    number out of range, a constraint): the same row fails every time, other rows need not."""
    if isinstance(error, UnicodeError | ValueError | OverflowError | TypeError):
        return True
    if isinstance(error, sqlite3.DataError | sqlite3.IntegrityError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(error, psycopg.DataError | psycopg.IntegrityError)


def _sqlite_code(error: sqlite3.Error) -> int:
    return int(getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF


def _is_pg_connection_error(error: BaseException) -> bool:
    """A PostgreSQL fault that passes: no SQLSTATE (the client lost the connection), class 08 (connection),
    class 53 (disk full, out of memory or connections) or one of ``_PG_TRANSIENT_STATES``."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(error, psycopg.Error):
        return False
    state = getattr(error, "sqlstate", None)
    if state is None:
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(("08", "53")) or state in _PG_TRANSIENT_STATES


def _is_pg_rollback(error: BaseException) -> bool:
    """A serialization failure or deadlock (class 40): the transaction may simply be run again."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(error, psycopg.Error):
        return False
    return str(getattr(error, "sqlstate", None) or "").startswith("40")


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
    timeout so concurrent writers wait instead of failing. PostgreSQL: a psycopg connection pool whose
    connections are checked when handed out (one the server terminated is replaced, not used).
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

    def set_thread_synchronous(self, mode: str) -> None:
        """SQLite: this thread's connections (this one and any reopened later) use ``synchronous=mode``."""
        if self.dialect != "sqlite":
            return
        self._local.synchronous = mode
        self._sqlite().execute(f"PRAGMA synchronous={mode}")

    def _sqlite(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(f"PRAGMA synchronous={getattr(self._local, 'synchronous', 'FULL')}")
                connection.execute("PRAGMA busy_timeout=30000")
            except sqlite3.OperationalError as error:
                raise StoreUnavailableError(error) from error
            self._local.connection = connection
            # SQLite opens a file it cannot write read-only, silently, and the connection stays so
            self._local.read_only = not self._file_writable()
        return connection

    def _file_writable(self) -> bool:
        """The database file (and its WAL, when there is one) can be opened for writing."""
        wal = self.path.with_name(self.path.name + "-wal")
        return os.access(self.path, os.W_OK) and (not wal.exists() or os.access(wal, os.W_OK))

    def _drop_sqlite(self) -> None:
        """Close this thread's connection (after a fault): the next call opens a fresh one."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            try:
                connection.close()
            except sqlite3.Error:
                pass

    def _fault(self, error: BaseException) -> StoreUnavailableError | None:
        """The error to raise for a fault of the database, or None for any other error (re-raised)."""
        if isinstance(error, StoreUnavailableError):
            return error
        if isinstance(error, sqlite3.OperationalError) and _sqlite_code(error) in _SQLITE_TRANSIENT:
            if _sqlite_code(error) in _SQLITE_REOPEN:
                self._drop_sqlite()
            return StoreUnavailableError(error)
        return StoreUnavailableError(error) if _is_pg_connection_error(error) else None

    @contextmanager
    def _pg_connection(self) -> Iterator[Any]:
        """A pooled connection that answers, committed on success and rolled back on error, then
        handed back (the pool's own ``connection()``, with ``_live_connection`` to get it)."""
        connection = self._live_connection()
        try:
            with connection:
                yield connection
        finally:
            self._pool.putconn(connection)

    def _live_connection(self) -> Any:
        """A pooled connection checked with a round trip. A stale one (the server terminated it) goes
        back to the pool, which replaces it, and the next is tried at once: the pool's own ``check``
        pauses a second or more between such tries."""
        for _ in range(self._pool.max_size + 1):
            connection = self._pool.getconn()
            try:
                self._pool.check_connection(connection)
            except Exception as error:  # noqa: BLE001 - a connection that fails its check is not used
                self._pool.putconn(connection)
                if not _is_pg_connection_error(error):
                    raise
                continue
            return connection
        return self._pool.getconn()  # every one tried was stale: a new one

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        Raises:
            StoreUnavailableError: the database failed (not the SQL or the data): retry later.
        """
        with self._faults_as_unavailable():
            if self.dialect == "sqlite":
                with self._sqlite_transaction() as cursor:
                    yield cursor
                return
            with self._pg_connection() as connection, connection.transaction():
                with connection.cursor() as cursor:
                    yield cursor

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[Cursor]:
        if getattr(self._local, "read_only", False) and self._file_writable():
            self._drop_sqlite()  # opened while the file could not be written; it can be now
        connection = self._sqlite()
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
        connection.commit()

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        """A cursor for queries (no write lock taken on SQLite).

        Raises:
            StoreUnavailableError: the database failed: retry later (``query`` retries once itself).
        """
        with self._faults_as_unavailable():
            if self.dialect == "sqlite":
                yield self._sqlite().cursor()
                return
            with self._pg_connection() as connection, connection.cursor() as cursor:
                yield cursor

    @contextmanager
    def _faults_as_unavailable(self) -> Iterator[None]:
        """Re-raise a database fault (not an SQL or data error) as the StoreUnavailableError of ``_fault``."""
        try:
            yield
        except Exception as error:
            fault = self._fault(error)
            if fault is None or fault is error:
                raise
            raise fault from error

    def query(self, work: Callable[[Cursor], T]) -> T:
        """``work(cursor)`` in ``read()``, run once more on a fresh connection if the one used was lost."""
        try:
            with self.read() as cursor:
                return work(cursor)
        except StoreUnavailableError as error:
            if not error.reconnects:
                raise
            with self.read() as cursor:
                return work(cursor)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.read() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() is not None
        except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
            return False

    def migrate(self, migrations: Sequence[Migration]) -> None:
        """Apply the migrations not yet applied, in order, each exactly once across processes.

        When every one is applied already, nothing is written: a worker (re)started while the database
        cannot be written still starts, and reports not ready until it can be.
        """
        if not self._pending(migrations):
            return
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

    def _pending(self, migrations: Sequence[Migration]) -> bool:
        """True unless the migrations table exists and records every one of ``migrations``."""
        try:
            with self.read() as cursor:
                cursor.execute("SELECT store, number FROM apprank_migrations")
                done = {(row[0], row[1]) for row in cursor.fetchall()}
        except StoreUnavailableError:
            raise
        except Exception:  # noqa: BLE001 - no migrations table yet (either dialect's error)
            return True
        return any((m.store, m.number) not in done for m in migrations)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._drop_sqlite()


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
