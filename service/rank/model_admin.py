"""Promote and roll back model versions: move the ``current`` pointer, audit it, tell every worker.

One change is: the pointer file replaced on the models volume (``model.versions.set_current``), then one
transaction that appends an audit row and bumps the ``models`` change counter, which every worker of
every replica polls (``service.experiments.sync``) and answers with a reload. The service's admin
endpoints and ``apprank models`` (without ``--url``) both go through ``ModelAdmin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from model.versions import (
    VersionError,
    check_version,
    current_version,
    list_versions,
    previous_version,
    set_current,
)
from service.db import Database, Migration
from service.experiments.models import check_name
from service.experiments.store import MODELS
from service.settings import DEFAULT_TABLE_PREFIX


def migrations(prefix: str) -> list[Migration]:
    """The audit table of version changes (its own store: the experiments store numbers its own)."""
    return [
        Migration(
            f"{prefix}model_versions",
            1,
            f"CREATE TABLE {prefix}model_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,"
            " action TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL, before_version TEXT,"
            " after_version TEXT)",
            f"CREATE TABLE {prefix}model_audit (id BIGSERIAL PRIMARY KEY, model TEXT NOT NULL,"
            " action TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL, before_version TEXT,"
            " after_version TEXT)",
        )
    ]


class UnknownModelError(VersionError):
    """No model of that name (or a name no model can have)."""


class ModelAuditEntry(BaseModel):
    """One change of a model's serving version: who (token name), when, what, before and after."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    id: int
    model: str
    action: str
    actor: str
    at: datetime
    before: str | None
    after: str | None


@dataclass(frozen=True)
class VersionChange:
    """What a promote or rollback did."""

    model: str
    action: str
    before: str | None
    after: str


class ModelAdmin:
    """Version changes of the models under ``models_dir``, audited in ``db``."""

    def __init__(self, models_dir: Path, db: Database, prefix: str = DEFAULT_TABLE_PREFIX) -> None:
        self.models_dir = models_dir
        self.db = db
        self.prefix = prefix

    def migrate(self) -> None:
        self.db.migrate(migrations(self.prefix))

    def model_dir(self, name: str) -> Path:
        """The directory of model ``name`` (VersionError for a bad name or an unknown model)."""
        try:
            check_name(name, "model name")
        except ValueError as error:
            raise UnknownModelError(str(error)) from None
        path = self.models_dir / name
        if not path.is_dir() or not list_versions(path):
            raise UnknownModelError(f"no model named {name!r}")
        return path

    def promote(self, name: str, version: str, actor: str) -> VersionChange:
        """Make ``version`` the serving version of ``name``."""
        return self._change(name, check_version(version), "promote", actor)

    def rollback(self, name: str, version: str | None, actor: str) -> VersionChange:
        """Serve ``version`` again, by default the one published before the current one."""
        target = check_version(version) if version is not None else previous_version(self.model_dir(name))
        return self._change(name, target, "rollback", actor)

    def publish_recorded(self, name: str, version: str, before: str | None, actor: str) -> None:
        """Audit a version published by a retrain and ask every worker to reload."""
        self._record(VersionChange(name, "publish", before, version), actor)

    def _change(self, name: str, version: str, action: str, actor: str) -> VersionChange:
        before = set_current(self.model_dir(name), version)
        change = VersionChange(name, action, before, version)
        self._record(change, actor)
        return change

    def _record(self, change: VersionChange, actor: str) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(
                self.db.sql(f"UPDATE {self.prefix}service_state SET value = value + 1 WHERE key = ?"),
                (MODELS,),
            )
            cursor.execute(
                self.db.sql(
                    f"INSERT INTO {self.prefix}model_audit (model, action, actor, at, before_version,"
                    " after_version) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (change.model, change.action, actor, _now(), change.before, change.after),
            )

    def audit(self, name: str, limit: int = 1000) -> list[ModelAuditEntry]:
        """The version changes of ``name``, oldest first."""
        query = (
            f"SELECT id, model, action, actor, at, before_version, after_version "
            f"FROM {self.prefix}model_audit WHERE model = ? ORDER BY id LIMIT ?"
        )
        rows = self.db.query(lambda cursor: cursor.execute(self.db.sql(query), (name, limit)).fetchall())
        return [
            ModelAuditEntry(
                id=row[0],
                model=row[1],
                action=row[2],
                actor=row[3],
                at=datetime.fromisoformat(row[4]),
                before=row[5],
                after=row[6],
            )
            for row in rows
        ]

    def current(self, name: str) -> str | None:
        return current_version(self.model_dir(name))


def _now() -> str:
    return datetime.now(UTC).isoformat()
