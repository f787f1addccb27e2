"""``apprank export-training`` (labeled rows from the event log) and ``apprank purge-events`` (retention)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

DAY = timedelta(days=1)


def day_bounds(start: datetime | None, end: datetime | None) -> tuple[float, float]:
    """[start of ``start``'s UTC day, end of ``end``'s UTC day) as unix times (open ends: all time)."""
    low = 0.0 if start is None else start.replace(tzinfo=UTC).timestamp()
    high = float("inf") if end is None else (end.replace(tzinfo=UTC) + DAY).timestamp()
    return low, high


def export_training_command(
    experiment: Annotated[str, typer.Option(help="experiment name")],
    out: Annotated[
        Path, typer.Option(help="output file, .csv or .parquet (X.schema.yaml is written beside it)")
    ],
    start: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="first UTC day")] = None,
    end: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="last UTC day")] = None,
    db: Annotated[str | None, typer.Option(help="database URL (default: APPRANK_DATABASE_URL)")] = None,
    models: Annotated[
        Path | None,
        typer.Option(help="bundles directory, the schema of the served model (default: APPRANK_MODELS_DIR)"),
    ] = None,
    schema: Annotated[
        Path | None, typer.Option(help="schema file (JSON or YAML) instead of the bundle's")
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="table prefix (default: APPRANK_TABLE_PREFIX)")] = None,
) -> None:
    """Impressions joined with downloads into labeled rows with the logged raw features."""
    from rich.console import Console

    from model.schema import FeatureSchema
    from pipeline.export import ExportError, export_training, schema_from_bundles
    from service.db import Database
    from service.events.store import open_event_store
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    low, high = day_bounds(start, end)
    database = Database(db or settings.database_url)
    try:
        store = open_event_store(database, prefix or settings.table_prefix)
        feature_schema = (
            FeatureSchema.load(schema)
            if schema is not None
            else schema_from_bundles(
                store.served_models(experiment, low, high), models or settings.models_dir
            )
        )
        summary = export_training(store, experiment, low, high, out, feature_schema)
    except ExportError as error:
        raise typer.BadParameter(str(error)) from None
    finally:
        database.close()
    written = f"{summary.rows:,} rows ({summary.positives:,} downloads) -> {summary.path}"
    Console().print(f"{written}, schema {summary.schema_path}")


def purge_events_command(
    older_than_days: Annotated[int, typer.Option(min=0, help="keep this many whole UTC days")],
    db: Annotated[str | None, typer.Option(help="database URL (default: APPRANK_DATABASE_URL)")] = None,
    prefix: Annotated[str | None, typer.Option(help="table prefix (default: APPRANK_TABLE_PREFIX)")] = None,
) -> None:
    """Delete served lists and events older than N days (retention)."""
    from rich.console import Console

    from service.db import Database
    from service.events.store import open_event_store
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    database = Database(db or settings.database_url)
    try:
        counts = open_event_store(database, prefix or settings.table_prefix).purge(older_than_days)
    finally:
        database.close()
    Console().print(f"purged: {counts}")


def register(app: typer.Typer) -> None:
    """Add ``apprank export-training`` and ``apprank purge-events`` to the CLI."""
    app.command("export-training")(export_training_command)
    app.command("purge-events")(purge_events_command)
