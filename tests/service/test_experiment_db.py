"""The experiment store on SQLite and on a real PostgreSQL (unique table prefix per test)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.db import Database
from service.experiments.models import Experiment
from service.experiments.router import allocate
from service.experiments.store import EXPERIMENTS, MODELS, ExperimentStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExperimentStore]:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        db = Database(request.getfixturevalue("postgres_url"))
    store = ExperimentStore(db, prefix)
    store.migrate()
    yield store
    if db.dialect == "postgresql":
        with db.transaction() as cursor:
            for table in ("experiments", "experiment_audit", "service_state"):
                cursor.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
            cursor.execute(
                db.sql("DELETE FROM apprank_migrations WHERE store = ?"), (f"{prefix}experiments",)
            )
    db.close()


def make(name: str, version: int, weight_a: float = 50) -> Experiment:
    now = datetime.now(UTC)
    return Experiment(
        name=name,
        salt=name,
        arms=[
            {"name": "a", "model": "lr", "weight": weight_a},
            {"name": "b", "model": "lr2", "weight": 100 - weight_a},
        ],
        control="a",
        default_arm="a",
        allocation=allocate({"a": int(weight_a * 100), "b": int((100 - weight_a) * 100)}),
        version=version,
        created_at=now,
        updated_at=now,
    )


def test_round_trip_audit_and_counters(store: ExperimentStore) -> None:
    assert store.generations() == {EXPERIMENTS: 0, MODELS: 0}
    created, was_created = store.save("exp", "alice", lambda before: make("exp", 1))
    assert was_created and store.get("exp") == created
    store.save("exp", "bob", lambda before: make("exp", before.version + 1 if before else 1, 70))
    assert store.get("exp").version == 2  # type: ignore[union-attr]
    assert [e.name for e in store.experiments()] == ["exp"]
    assert store.delete("exp", "carol") is not None and store.delete("exp", "carol") is None
    audit = store.audit("exp")
    assert [(a.action, a.actor) for a in audit] == [
        ("create", "alice"),
        ("update", "bob"),
        ("delete", "carol"),
    ]
    assert audit[1].before is not None and audit[1].before.arms[0].weight == 50
    assert audit[1].after is not None and audit[1].after.arms[0].weight == 70
    assert store.generations()[EXPERIMENTS] == 4  # two saves, two deletes (a no-op one too)
    store.bump(MODELS)
    assert store.generations()[MODELS] == 1


def test_a_failed_change_leaves_no_trace(store: ExperimentStore) -> None:
    def refuse(before: Experiment | None) -> Experiment:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.save("exp", "alice", refuse)
    assert store.get("exp") is None and store.audit("exp") == []
    assert store.generations()[EXPERIMENTS] == 0


def test_concurrent_updates_are_serialized(store: ExperimentStore) -> None:
    store.save("exp", "alice", lambda before: make("exp", 1))

    def bump_version() -> None:
        for _ in range(5):
            store.save("exp", "alice", lambda before: make("exp", (before.version if before else 0) + 1))

    threads = [threading.Thread(target=bump_version) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("exp").version == 21  # type: ignore[union-attr]
    assert len(store.audit("exp")) == 21


def test_migrations_apply_once(store: ExperimentStore) -> None:
    store.migrate()
    store.migrate()
    assert store.generations() == {EXPERIMENTS: 0, MODELS: 0}
