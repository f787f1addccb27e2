"""``apprank retrain``: the daily loop for one model (see ``pipeline.retrain``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.models_cli import TokenOption, client_token


def http_reloader(url: str, token: str | None) -> Any:
    """``POST /models/reload`` on ``url`` with the admin token; its status code and answer."""
    import httpx

    def reload() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(f"{url.rstrip('/')}/models/reload", headers=headers, timeout=120)
        body = (
            response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        )
        return {"status": response.status_code} | {k: body.get(k) for k in ("loaded", "refused", "current")}

    return reload


def summary_rows(state: Any) -> list[tuple[str, str]]:
    """The key lines of a finished run, for the printed table."""
    rows = [
        ("outcome", str(state.outcome)),
        ("serving version", str(state.serving_version)),
        ("candidate version", state.candidate_version),
        (
            "exported",
            ", ".join(
                f"{k} {v['rows']:,} rows / {v['positives']:,} downloads" for k, v in state.exported.items()
            ),
        ),
    ]
    for who, metrics in (("candidate", state.candidate_metrics), ("serving", state.serving_metrics)):
        if metrics:
            figures = [
                f"{key} {metrics[key]:.4f}" for key in ("auc", "logloss", "calibration") if key in metrics
            ]
            rows.append((f"{who} (held out)", "  ".join(figures)))
    rows += [("reason", reason) for reason in state.reasons]
    if state.reload is not None:
        rows.append(("reload", json.dumps(state.reload)))
    rows.append(("steps", "  ".join(f"{k} {v:.1f}s" for k, v in state.seconds.items())))
    return rows


def retrain_command(
    experiment: Annotated[str, typer.Option(help="the experiment whose log is the training data")],
    model: Annotated[str, typer.Option(help="the model (directory under --models) to retrain")],
    models: Annotated[Path, typer.Option(help="models directory (the shared volume)")],
    days: Annotated[int | None, typer.Option(min=2, help="days in the window (default 7)")] = None,
    holdout_days: Annotated[int | None, typer.Option(min=1, help="last days held out (default 1)")] = None,
    end: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="last UTC day of the window (default: yesterday)"),
    ] = None,
    keep: Annotated[int | None, typer.Option(min=1, help="versions kept (default 5)")] = None,
    config: Annotated[Path | None, typer.Option(help="retrain YAML (days, keep, train, gate)")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="training override key=value")] = None,
    db: Annotated[str | None, typer.Option(help="database URL (default: APPRANK_DATABASE_URL)")] = None,
    prefix: Annotated[str | None, typer.Option(help="table prefix (default: APPRANK_TABLE_PREFIX)")] = None,
    url: Annotated[
        str | None, typer.Option(help="the service: POST /models/reload there after publishing")
    ] = None,
    token: TokenOption = None,
    summary: Annotated[Path | None, typer.Option(help="also write the JSON summary here")] = None,
) -> None:
    """Export the window, train warm, evaluate, gate, publish a version and reload the service."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.retrain import RetrainError, RetrainJob, Window, load_retrain_config
    from pipeline.retrain_run import Services, run_retrain
    from service.db import Database
    from service.events.store import open_event_store
    from service.experiments.store import ExperimentStore
    from service.rank.model_admin import ModelAdmin
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    retrain = load_retrain_config(config, days=days, holdout_days=holdout_days, keep=keep)
    last_day = end.date() if end is not None else datetime.now(UTC).date() - timedelta(days=1)
    try:
        window = Window.ending(last_day, retrain.days, retrain.holdout_days)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    job = RetrainJob(experiment, model, models, window, retrain, tuple(overrides or ()))
    table_prefix = prefix or settings.table_prefix
    database = Database(db or settings.database_url)
    console = Console()
    try:
        ExperimentStore(database, table_prefix).migrate()
        ModelAdmin(models, database, table_prefix).migrate()
        reloader = http_reloader(url, client_token(token)) if url else None
        services = Services(
            open_event_store(database, table_prefix), database, table_prefix, reloader=reloader
        )
        state = run_retrain(job, services)
    except RetrainError as error:
        console.print(f"[red]retrain failed[/red]: {error}")
        raise typer.Exit(1) from None
    finally:
        database.close()
    table = Table("retrain", f"{model} {window.first_day} .. {window.last_day}")
    for key, value in summary_rows(state):
        table.add_row(key, value)
    console.print(table)
    text = state.model_dump_json(indent=2)
    for path in (job.work / "summary.json", summary):
        if path is not None:
            path.write_text(text + "\n")
    console.print(f"summary: {job.work / 'summary.json'}")


def register(app: typer.Typer) -> None:
    """Add ``apprank retrain`` to the CLI."""
    app.command("retrain")(retrain_command)
