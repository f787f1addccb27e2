"""``apprank models list|promote|rollback`` on a models directory and a database (no service needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apprank.cli import build_app
from model.encoder import FeatureEncoder
from model.versions import current_version
from service.db import Database
from service.experiments.store import MODELS, ExperimentStore
from service.rank.model_admin import ModelAdmin
from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle
from tests.service.test_versions import V1, V2, V3, publish_lr


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    return fit_frappe_encoder()


@pytest.fixture
def models(tmp_path: Path, encoder: FeatureEncoder) -> Path:
    """``lr`` with three versions (V3 current) and a flat ``lr2``."""
    root = tmp_path / "models"
    write_lr_bundle(root / "lr", encoder, random_weights(encoder, seed=1), version=V1)
    publish_lr(root / "lr", encoder, V2, seed=2)
    publish_lr(root / "lr", encoder, V3, seed=3)
    write_lr_bundle(root / "lr2", encoder, random_weights(encoder, seed=4), version=V1)
    return root


def cli(models: Path, db: str, *args: str) -> str:
    result = CliRunner().invoke(build_app(), ["models", *args, "--models", str(models), "--db", db])
    assert result.exit_code == 0, result.output
    return result.output


def test_rollback_then_promote_move_the_pointer_and_are_audited(models: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    assert f"{V3} -> {V2}" in cli(models, db, "rollback", "lr")
    assert current_version(models / "lr") == V2
    assert f"{V2} -> {V1}" in cli(models, db, "rollback", "lr")
    assert f"{V1} -> {V3}" in cli(models, db, "promote", "lr", V3)
    database = Database(db)
    try:
        audit = ModelAdmin(models, database).audit("lr")
    finally:
        database.close()
    assert [(a.action, a.before, a.after) for a in audit] == [
        ("rollback", V3, V2),
        ("rollback", V2, V1),
        ("promote", V1, V3),
    ]
    assert all(a.actor.startswith("cli:") for a in audit)


def test_list_marks_the_serving_version(models: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["models", "list", "--models", str(models)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if V1 in line or V3 in line]
    assert any("lr " in line and V3 in line and "*" in line for line in lines), result.output
    assert any("lr2" in line and V1 in line and "*" in line for line in lines), result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("promote", "lr", "19990101.000000"), "no version"),
        (("promote", "nope", V1), "no model named"),
        (("rollback", "lr2"), "no version before"),
    ],
)
def test_bad_changes_are_refused_and_leave_the_pointer(
    models: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    result = CliRunner().invoke(build_app(), ["models", *args, "--models", str(models), "--db", db])
    assert result.exit_code != 0 and message in result.output
    assert current_version(models / "lr") == V3


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database URL and a table prefix of this test alone (PostgreSQL: dropped afterwards)."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}", prefix
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url, prefix
    db = Database(url)
    try:
        with db.transaction() as cursor:
            for table in ("experiments", "experiment_audit", "service_state", "health", "model_audit"):
                cursor.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
            stores = (f"{prefix}experiments", f"{prefix}model_versions")
            for store in stores:
                cursor.execute(db.sql("DELETE FROM apprank_migrations WHERE store = ?"), (store,))
    finally:
        db.close()


def test_a_change_bumps_the_counter_every_worker_polls(models: Path, database_url: tuple[str, str]) -> None:
    url, prefix = database_url
    result = CliRunner().invoke(
        build_app(), ["models", "rollback", "lr", "--models", str(models), "--db", url, "--prefix", prefix]
    )
    assert result.exit_code == 0, result.output
    database = Database(url)
    try:
        store = ExperimentStore(database, prefix)
        assert store.generations()[MODELS] == 1
        audit = ModelAdmin(models, database, prefix).audit("lr")
    finally:
        database.close()
    assert [(a.action, a.before, a.after) for a in audit] == [("rollback", V3, V2)]
