"""``apprank models list|promote|rollback NAME [VERSION]``: the versions of the served models.

With ``--url`` (and ``--token``) a change goes through the running service's admin endpoints; without,
it is applied to the models directory and the database directly (``service.rank.model_admin``): the same
pointer move, audit row and ``models`` counter, so every running worker reloads within a second either way.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Any

import typer

models_app = typer.Typer(no_args_is_help=True, help="List, promote and roll back model versions.")

ModelsOption = Annotated[
    Path | None, typer.Option("--models", help="models directory (default: APPRANK_MODELS_DIR)")
]
DbOption = Annotated[str | None, typer.Option(help="database URL (default: APPRANK_DATABASE_URL)")]
PrefixOption = Annotated[str | None, typer.Option(help="table prefix (default: APPRANK_TABLE_PREFIX)")]
UrlOption = Annotated[str | None, typer.Option(help="the service's base URL: change it through its API")]
TokenOption = Annotated[
    str | None, typer.Option(envvar="APPRANK_CLIENT_TOKEN", help="admin bearer token (with --url)")
]


def client_token(token: str | None) -> str | None:
    """The bearer token a CLI presents: ``--token`` / ``APPRANK_CLIENT_TOKEN``, else the first token of
    ``APPRANK_ADMIN_TOKEN`` (the service's own setting: ``token`` or ``name:token,...``)."""
    if token:
        return token
    from service.auth import AdminTokens

    configured = AdminTokens.parse(os.environ.get("APPRANK_ADMIN_TOKEN")).tokens
    return configured[0][1].decode() if configured else None


def version_rows(models_dir: Path, name: str | None) -> list[dict[str, Any]]:
    """One row per stored version of ``name`` (or of every model), oldest first."""
    from model.bundle import read_manifest
    from model.versions import current_version, has_bundle, list_versions

    names = [name] if name else sorted(p.name for p in models_dir.iterdir() if p.is_dir() and has_bundle(p))
    rows = []
    for model in names:
        directory = models_dir / model
        current = current_version(directory)
        for entry in list_versions(directory):
            metrics = read_manifest(entry.path).metrics
            auc = metrics.get("test", metrics.get("valid", {})).get("auc")
            rows.append(
                {
                    "model": model,
                    "version": entry.version,
                    "created_at": entry.created_at.isoformat(),
                    "current": entry.version == current,
                    "auc": auc,
                }
            )
    return rows


@models_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="model name (default: every model)")] = None,
    models: ModelsOption = None,
) -> None:
    """The stored versions of each model; * marks the serving one."""
    from rich.console import Console
    from rich.table import Table

    from service.settings import ServiceSettings

    table = Table("model", "version", "created", "current", "AUC")
    for row in version_rows(models or ServiceSettings().models_dir, name):
        auc = "" if row["auc"] is None else f"{row['auc']:.4f}"
        table.add_row(row["model"], row["version"], row["created_at"], "*" if row["current"] else "", auc)
    Console().print(table)


def _change(
    action: str, name: str, version: str | None, models: Path | None, db: str | None, prefix: str | None
) -> tuple[str | None, str]:
    """Apply a promote or rollback to the directory and database; (before, after)."""
    from service.db import Database
    from service.experiments.store import ExperimentStore
    from service.rank.model_admin import ModelAdmin
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    database = Database(db or settings.database_url)
    try:
        ExperimentStore(database, prefix or settings.table_prefix).migrate()
        admin = ModelAdmin(models or settings.models_dir, database, prefix or settings.table_prefix)
        admin.migrate()
        actor = f"cli:{getpass.getuser()}"
        if action == "promote":
            assert version is not None
            change = admin.promote(name, version, actor)
        else:
            change = admin.rollback(name, version, actor)
    finally:
        database.close()
    return change.before, change.after


def _remote(
    action: str, name: str, version: str | None, url: str, token: str | None
) -> tuple[str | None, str]:
    import httpx

    body = {} if version is None else {"version": version}
    token = client_token(token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(f"{url.rstrip('/')}/models/{name}/{action}", json=body, headers=headers, timeout=60)
    if response.status_code != 200:
        raise typer.BadParameter(f"{response.status_code}: {response.text}")
    answer = response.json()
    return answer["before"], answer["after"]


def _run(action: str, name: str, version: str | None, **options: Any) -> None:
    from rich.console import Console

    from model.versions import VersionError

    try:
        if options["url"]:
            before, after = _remote(action, name, version, options["url"], options["token"])
        else:
            before, after = _change(
                action, name, version, options["models"], options["db"], options["prefix"]
            )
    except VersionError as error:
        raise typer.BadParameter(str(error)) from None
    Console().print(f"{name}: {action} {before} -> {after}")


@models_app.command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[str, typer.Argument(help="the version to serve")],
    models: ModelsOption = None,
    db: DbOption = None,
    prefix: PrefixOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Serve VERSION of NAME (every worker reloads; audited)."""
    _run("promote", name, version, models=models, db=db, prefix=prefix, url=url, token=token)


@models_app.command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[str | None, typer.Argument(help="default: the version before the current one")] = None,
    models: ModelsOption = None,
    db: DbOption = None,
    prefix: PrefixOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Serve the previous version of NAME again (or VERSION; every worker reloads; audited)."""
    _run("rollback", name, version, models=models, db=db, prefix=prefix, url=url, token=token)


def register(app: typer.Typer) -> None:
    """Add ``apprank models`` to the CLI."""
    app.add_typer(models_app, name="models")
