"""``apprank report``: the experiment report in the terminal (rich tables), as JSON, and as a PNG chart."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from service.db import Database
    from service.report.build import ExperimentArms
    from service.report.models import ExperimentReport

log = logging.getLogger(__name__)


def parse_arms(text: str, name: str, control: str | None) -> ExperimentArms:
    """``control:50,treatment:50`` into ``ExperimentArms`` (the first arm is the control by default)."""
    from service.report.build import ExperimentArms

    weights: dict[str, float] = {}
    for part in text.split(","):
        arm, sep, weight = part.strip().partition(":")
        try:
            weights[arm] = float(weight) if sep else float("nan")
        except ValueError:
            raise typer.BadParameter(f"{part!r}: the weight must be a number", param_hint="--arms") from None
        if not arm or not sep or not weights[arm] >= 0:
            raise typer.BadParameter(f"{part!r} is not ARM:WEIGHT with a weight >= 0", param_hint="--arms")
    try:
        return ExperimentArms(name=name, weights=weights, control=control or next(iter(weights)))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--control") from None


def experiment_from_db(db: Database, prefix: str, name: str) -> ExperimentArms | None:
    """The experiment's arms from the service's experiment store, or None (absent, or no such table)."""
    from service.experiments.store import ExperimentStore
    from service.report.routes import arms_of

    try:
        experiment = ExperimentStore(db, prefix).get(name)
    except Exception as error:  # noqa: BLE001 - no experiment tables in this database: fall back
        log.info("no experiment store in the database (%s)", error)
        return None
    return None if experiment is None else arms_of(name, experiment)


def print_report(report: ExperimentReport) -> None:
    """Rich tables: arms, lifts, SRM, then the daily lifts."""
    from rich.console import Console

    console = Console()
    console.print(_arms_table(report))
    console.print(_lifts_table(report))
    srm = report.srm
    verdict = "[red]SAMPLE RATIO MISMATCH[/red]" if srm.flagged else "[green]ok[/green]"
    chi2 = "-" if srm.chi2 is None else f"{srm.chi2:.3f}"
    p_value = "-" if srm.p_value is None else f"{srm.p_value:.3g}"
    console.print(f"SRM check: {verdict} (chi2 = {chi2}, p = {p_value}, users {srm.observed_users})")
    if srm.note:
        console.print(f"  {srm.note}")
    console.print(_daily_table(report))


def _arms_table(report: ExperimentReport) -> Table:
    from rich.table import Table

    table = Table(
        title=f"experiment {report.experiment} ({report.start or 'start'} .. {report.end or 'now'})"
    )
    for column in ("arm", "weight", "users", "impressions", "downloads", "CTR % [95% CI]", "CVR [95% CI]"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in report.arms:
        table.add_row(
            arm.arm + (" (control)" if arm.control else ""),
            "-" if arm.weight is None else f"{arm.weight:g}%",
            f"{arm.users:,}",
            f"{arm.impressions:,}",
            f"{arm.downloads:,}",
            _with_ci(arm.ctr, arm.ctr_ci.low, arm.ctr_ci.high, 100, ""),
            _with_ci(arm.cvr, arm.cvr_ci.low, arm.cvr_ci.high, 1, ""),
        )
    return table


def _lifts_table(report: ExperimentReport) -> Table:
    from rich.table import Table

    table = Table(
        title=f"lift over {report.control} (decision: always-valid p, CUPED where it applies, Holm)"
    )
    columns = (
        "arm",
        "metric",
        "lift [95% CI]",
        "p",
        "always-valid CI",
        "CUPED lift [always-valid CI]",
        "verdict",
    )
    for column in columns:
        table.add_column(column)
    for lift in report.lifts:
        cuped = lift.cuped
        table.add_row(
            lift.arm,
            lift.metric,
            _with_ci(lift.lift, lift.ci.low, lift.ci.high, 100, "%"),
            "-" if lift.p_value is None else f"{lift.p_value:.3g}",
            _with_ci(lift.lift, lift.sequential_ci.low, lift.sequential_ci.high, 100, "%"),
            "-"
            if cuped is None
            else _with_ci(cuped.lift, cuped.sequential_ci.low, cuped.sequential_ci.high, 100, "%"),
            "[green]conclusive[/green]" if lift.conclusive else "keep running",
        )
    return table


def _daily_table(report: ExperimentReport) -> Table:
    from rich.table import Table

    table = Table(title="daily lift")
    for column in ("day", "arm", "users", "CTR lift [95% CI]", "CVR lift [95% CI]"):
        table.add_column(column)
    for day in report.daily:
        users = {arm.arm: arm.users for arm in day.arms}
        by_metric = {(lift.arm, lift.metric): lift for lift in day.lifts}
        for name in sorted({lift.arm for lift in day.lifts}):
            ctr, cvr = by_metric[(name, "ctr")], by_metric[(name, "cvr")]
            table.add_row(
                str(day.day),
                name,
                f"{users.get(name, 0):,}",
                _with_ci(ctr.lift, ctr.ci.low, ctr.ci.high, 100, "%"),
                _with_ci(cvr.lift, cvr.ci.low, cvr.ci.high, 100, "%"),
            )
    return table


def _with_ci(value: float | None, low: float | None, high: float | None, scale: float, unit: str) -> str:
    if value is None:
        return "-"
    text = f"{value * scale:.3f}{unit}"
    return text if low is None or high is None else f"{text} [{low * scale:.3f}, {high * scale:.3f}]"


def report_command(
    experiment: Annotated[str, typer.Option(help="experiment name")],
    db: Annotated[str | None, typer.Option(help="database URL (default: APPRANK_DATABASE_URL)")] = None,
    start: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="first UTC day")] = None,
    end: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="last UTC day")] = None,
    png: Annotated[Path | None, typer.Option(help="write the daily lift chart here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    arms: Annotated[str | None, typer.Option(help="ARM:WEIGHT,... when not in the database")] = None,
    control: Annotated[str | None, typer.Option(help="control arm with --arms (default: first)")] = None,
    prefix: Annotated[str | None, typer.Option(help="table prefix (default: APPRANK_TABLE_PREFIX)")] = None,
) -> None:
    """Per-arm CTR and CVR with 95% intervals, lift over the control, SRM check, daily lift."""
    from rich.console import Console

    from service.db import Database
    from service.events.store import open_event_store
    from service.report.build import build_report
    from service.report.chart import render_daily_chart
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    url, table_prefix = db or settings.database_url, prefix or settings.table_prefix
    database = Database(url)
    try:
        definition = parse_arms(arms, experiment, control) if arms else None
        definition = definition or experiment_from_db(database, table_prefix, experiment)
        if definition is None:
            raise typer.BadParameter(
                f"no experiment {experiment!r} in {url}; give --arms", param_hint="--experiment"
            )
        report = build_report(
            open_event_store(database, table_prefix), definition, start and start.date(), end and end.date()
        )
    finally:
        database.close()
    if as_json:
        Console().print_json(report.model_dump_json())
    else:
        print_report(report)
    if png is not None:
        png.write_bytes(render_daily_chart(report))
        Console(stderr=True).print(f"chart written to {png}")


def register(app: typer.Typer) -> None:
    """Add ``apprank report`` to the CLI."""
    app.command("report")(report_command)
