"""``apprank run``: the one command of a fresh machine (what ``make run`` calls).

It bootstraps (synthetic data, LR and DeepFM-D bundles, a 50/50 experiment; see ``apprank.bootstrap``),
prints what is where, then replaces itself with ``apprank serve`` (so signals reach uvicorn directly).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from apprank.bootstrap import DEFAULT_ROWS, BootstrapConfig, BootstrapResult, bootstrap
from service.settings import DEFAULT_DATABASE_URL

console = Console()


def run_command(
    models: Annotated[
        Path, typer.Option(help="bundles directory (lr and deepfm are trained when empty)")
    ] = Path("models"),
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 2,
    data: Annotated[Path, typer.Option(help="synthetic dataset folder")] = Path("var/data/synthetic"),
    experiments_file: Annotated[Path, typer.Option(help="experiments seeded at start")] = Path(
        "var/experiments.json"
    ),
    rows: Annotated[int, typer.Option(min=1000, help="synthetic impressions when generating")] = DEFAULT_ROWS,
    serve: Annotated[bool, typer.Option(help="start the service after the bootstrap")] = True,
) -> None:
    """Train LR and DeepFM-D on synthetic data if no bundles exist, then serve a 50/50 A/B test."""
    config = BootstrapConfig(models_dir=models, data_dir=data, experiments_file=experiments_file, rows=rows)
    with console.status("bootstrapping: synthetic data and bundles (a few minutes on a fresh machine)"):
        result = bootstrap(config)
    token, generated = admin_token()
    environment = service_environment(result, token)
    database = environment["APPRANK_DATABASE_URL"]
    console.print(summary_table(result, host, port, workers, database, token if generated else None))
    if not serve:
        return
    command = [sys.executable, "-m", "apprank", "serve", "--models", str(models)]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    sys.stdout.flush()
    os.execve(sys.executable, command, {**os.environ, **environment})


def admin_token() -> tuple[str, bool]:
    """``APPRANK_ADMIN_TOKEN`` when set, else a fresh random token; and whether it was generated."""
    token = os.environ.get("APPRANK_ADMIN_TOKEN")
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def service_environment(result: BootstrapResult, token: str) -> dict[str, str]:
    """The ``APPRANK_*`` variables the service gets (ones already set by the user are kept)."""
    wanted = {
        "APPRANK_ADMIN_TOKEN": token,
        "APPRANK_DATABASE_URL": DEFAULT_DATABASE_URL,
    }
    if result.experiment is not None:
        wanted["APPRANK_EXPERIMENTS_FILE"] = str(result.config.experiments_file)
        wanted["APPRANK_DEFAULT_EXPERIMENT"] = result.experiment
    chosen = {name: os.environ.get(name) or value for name, value in wanted.items()}
    database = chosen["APPRANK_DATABASE_URL"]
    if database.startswith("sqlite:///"):
        Path(database.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return chosen


def summary_table(
    result: BootstrapResult, host: str, port: int, workers: int, database: str, new_token: str | None
) -> Table:
    """What is where: URL, bundles, experiment, database, admin token, and commands to try."""
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    table = Table(title="apprank run", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("service", f"{url}  ({workers} workers; docs at {url}/docs)")
    for name in (*result.trained, *result.reused):
        table.add_row(f"model {name}", _model_line(result, name))
    data = "generated now" if result.data_created else "reused"
    table.add_row("synthetic data", f"{result.config.data_dir} ({data})")
    if result.experiment is not None:
        table.add_row("experiment", f"{result.experiment}: 50% lr (control) / 50% deepfm")
        table.add_row("experiments file", str(result.config.experiments_file))
    table.add_row("database", database)
    if new_token is None:
        table.add_row("admin token", "from APPRANK_ADMIN_TOKEN")
    else:
        table.add_row("admin token", f"{new_token}  (generated now; set APPRANK_ADMIN_TOKEN to choose one)")
    if result.experiment is not None:
        world = result.world_file
        table.add_row("simulate", f"apprank simulate --url {url} --world {world} --users 2000 --days 7")
        where = "" if database == DEFAULT_DATABASE_URL else f" --db {database}"
        table.add_row(
            "report", f"apprank report --experiment {result.experiment}{where} --png var/report.png"
        )
    return table


def _model_line(result: BootstrapResult, name: str) -> str:
    how = "trained now" if name in result.trained else "reused"
    auc = result.test_auc.get(name)
    figures = "" if auc is None else f", test AUC {auc:.4f}"
    return f"{result.config.models_dir / name} ({how}{figures})"


def register(app: typer.Typer) -> None:
    """Add ``apprank run`` to the CLI."""
    app.command("run")(run_command)
