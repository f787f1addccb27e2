"""``apprank simulate``: the DeepFM paper's online A/B test, reproduced against a running service.

Users of the synthetic world the models were trained on (``--world``) visit the store for ``--days``
days, are served ranked lists by ``POST /rank``, download with the world's true probabilities, and
their impressions and downloads are posted to ``POST /events``. At the end it prints the experiment
report (``GET /experiments/{name}/report``: per-arm CTR and CVR, lift with intervals, SRM, per-day
lift) and the recommendation-list metrics of the lists the simulation was served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from simulation.ab_test import SimulationConfig, SimulationError
from simulation.eventpost import EventPostError, EventTime

if TYPE_CHECKING:
    import httpx

    from service.report.models import ExperimentReport
    from simulation.ab_test import SimulationResult
    from simulation.listmetrics import ListMetricsRow
    from simulation.retrain_demo import RetrainAfter

console = Console()
DEFAULT_WORLD = Path("var/data/synthetic/synth.json")


def simulate_command(
    url: Annotated[str, typer.Option(help="the service")] = "http://127.0.0.1:8000",
    users: Annotated[int, typer.Option(min=1, help="distinct simulated users")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="simulated days")] = 7,
    seed: Annotated[int, typer.Option(help="seed of the simulation (the world has its own)")] = 7,
    list_size: Annotated[int, typer.Option(min=1, help="top apps shown per page view")] = 10,
    candidates: Annotated[int, typer.Option(min=1, help="apps ranked per request")] = 100,
    experiment: Annotated[str, typer.Option(help="experiment named in every /rank request")] = "deepfm-vs-lr",
    world: Annotated[
        Path, typer.Option(help="the synthetic data's synth.json (or its folder)")
    ] = DEFAULT_WORLD,
    concurrency: Annotated[int, typer.Option(min=1, help="visits in flight at once")] = 16,
    visit_share: Annotated[float, typer.Option(min=0.01, max=1.0, help="users visiting per day")] = 0.5,
    views: Annotated[float, typer.Option(min=1.0, help="mean page views per visit")] = 2.0,
    event_time: Annotated[EventTime, typer.Option(help="event ts: simulated day, server clock, or auto")] = (
        EventTime.AUTO
    ),
    png: Annotated[Path | None, typer.Option(help="write the report's per-day lift chart here")] = None,
    lists_png: Annotated[Path | None, typer.Option(help="write the list-metrics chart here")] = None,
    out: Annotated[Path | None, typer.Option(help="write the figures (report, list metrics) as JSON")] = None,
    retrain_after: Annotated[
        int | None, typer.Option(min=1, help="run apprank retrain after this day (needs --models)")
    ] = None,
    models: Annotated[
        Path | None, typer.Option(help="the service's models directory (--retrain-after)")
    ] = None,
    retrain_model: Annotated[str, typer.Option(help="the model --retrain-after retrains")] = "deepfm",
    retrain_set: Annotated[
        list[str] | None, typer.Option("--retrain-set", help="training override key=value for the retrain")
    ] = None,
    retrain_config: Annotated[Path | None, typer.Option(help="retrain YAML (gate, train)")] = None,
    db: Annotated[
        str | None, typer.Option(help="the service's database (default: APPRANK_DATABASE_URL)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="admin token: the retrain calls POST /models/reload with it")
    ] = None,
) -> None:
    """Simulate users of the synthetic store against the service, then print the A/B report."""
    from simulation.retrain_demo import RetrainAfter
    from simulation.storefront import Storefront, load_world

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    config = SimulationConfig(
        users=users,
        days=days,
        seed=seed,
        visit_share=visit_share,
        views_per_visit=views,
        candidates=candidates,
        list_size=list_size,
        experiment=experiment,
        concurrency=concurrency,
        event_time=event_time,
    )
    try:
        store = Storefront(load_world(world))
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error), param_hint="--world") from None
    retrain = None
    if retrain_after is not None:
        if models is None or retrain_after >= days:
            raise typer.BadParameter("needs --models and a day before the last", param_hint="--retrain-after")
        log_file = out.parent / "retrain.log" if out is not None else None
        retrain = RetrainAfter(
            retrain_after, models, retrain_model, url if token else None, token, db, retrain_config,
            tuple(retrain_set or ()), log_file,
        )  # fmt: skip
    started = time.perf_counter()
    try:
        result, report = asyncio.run(_simulate(url, store, config, retrain))
    except (SimulationError, EventPostError, RuntimeError) as error:
        console.print(f"[red]simulation stopped: {error}[/red]")
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - started
    arms = [arm.arm for arm in report.arms]  # the control first
    console.print(client_table(result, elapsed, arms))
    console.print(daily_client_table(result, arms))
    _print_events(result)
    swap = _print_retrain(result, retrain, arms) if retrain is not None else None
    _print_report(report, png)
    rows = _print_list_metrics(result, arms, lists_png)
    if out is not None:
        write_figures(out, result, report, rows, elapsed, swap)


async def _simulate(
    url: str, store: Any, config: SimulationConfig, retrain: RetrainAfter | None = None
) -> tuple[SimulationResult, ExperimentReport]:
    import httpx

    from simulation.ab_test import Simulation

    limits = httpx.Limits(
        max_connections=config.concurrency + 2, max_keepalive_connections=config.concurrency + 2
    )
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        await _check_ready(client)
        simulation = Simulation(store, config)

        def progress(day: int, views: int) -> None:
            console.print(f"day {day + 1}/{config.days} done: {views:,} page views so far")
            if retrain is not None and day + 1 == retrain.day:
                console.print(f"retraining {retrain.model} on days 1-{day + 1} while day {day + 2} runs")

        after_day = retrain.hook(config) if retrain is not None else None
        result = await simulation.run(client, progress, after_day)
        return result, await fetch_report(client, config.experiment)


async def _check_ready(client: httpx.AsyncClient) -> None:
    import httpx

    try:
        response = await client.get("/readyz")
    except httpx.TransportError as error:
        raise typer.BadParameter(f"cannot reach {client.base_url}: {error}", param_hint="--url") from None
    if response.status_code != 200:
        raise typer.BadParameter(
            f"{client.base_url}/readyz answered {response.status_code}", param_hint="--url"
        )


async def fetch_report(client: httpx.AsyncClient, experiment: str) -> ExperimentReport:
    """The experiment report from ``GET /experiments/{name}/report``."""
    from service.report.models import ExperimentReport

    response = await client.get(f"/experiments/{experiment}/report")
    response.raise_for_status()
    return ExperimentReport.model_validate_json(response.content)


def client_table(result: SimulationResult, elapsed: float, order: list[str]) -> Table:
    """Per arm, what the client saw: users, page views, impressions, downloads, CTR and the true CTR."""
    import numpy as np

    log = result.log
    arms = np.asarray(log.arms, dtype=str)
    users, downloads = np.asarray(log.users), np.asarray(log.downloads)
    truth = np.asarray(log.true_ctr_sum)
    shown = result.config.list_size
    table = Table(title=f"simulation: {len(log.users):,} page views in {elapsed:.0f} s (client side)")
    for column in ("arm", "users", "page views", "impressions", "downloads", "CTR %", "true CTR %"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    seen = set(arms.tolist())
    for arm in [a for a in order if a in seen] + sorted(seen - set(order)):
        mask = arms == arm
        views = int(mask.sum())
        table.add_row(
            arm,
            f"{np.unique(users[mask]).size:,}",
            f"{views:,}",
            f"{views * shown:,}",
            f"{int(downloads[mask].sum()):,}",
            f"{100 * downloads[mask].sum() / (views * shown):.3f}",
            f"{100 * truth[mask].sum() / (views * shown):.3f}",
        )
    return table


def daily_client_table(result: SimulationResult, arms: list[str]) -> Table:
    """Per simulated day, the CTR each arm had as the client saw it, and the lift over ``arms[0]``.

    Point estimates only: the report's per-day breakdown (with intervals) is the server's, by event time.
    """
    import numpy as np

    log = result.log
    served, days = np.asarray(log.arms, dtype=str), np.asarray(log.days)
    downloads = np.asarray(log.downloads, dtype=np.float64)
    from simulation.retrain_demo import versions_by_day

    names = [arm for arm in arms if arm in set(log.arms)]
    table = Table(title="per simulated day (client side, point estimates)")
    table.add_column("day")
    for column in [f"{name} CTR %" for name in names] + [f"{name} lift" for name in names[1:]]:
        table.add_column(column, justify="right")
    for name in names:
        table.add_column(f"{name} version")
    first = result.config.start_date()
    versions = versions_by_day(result)
    for day in range(result.config.days):
        shown = [downloads[(days == day) & (served == name)] for name in names]
        ctr = [float(d.mean()) / result.config.list_size if d.size else float("nan") for d in shown]
        cells = [f"{100 * value:.2f}" for value in ctr] + [f"{100 * (v / ctr[0] - 1):+.1f}%" for v in ctr[1:]]
        cells += [", ".join(versions.get(day, {}).get(name, [])) for name in names]
        table.add_row(f"{day + 1} ({first + timedelta(days=day)})", *cells)
    return table


def _print_retrain(result: SimulationResult, retrain: RetrainAfter, arms: list[str]) -> dict[str, Any]:
    """The retrain's outcome and the noise-free check of the swap (true CTR before / after)."""
    from simulation.retrain_demo import swap_check

    summary = retrain.summary or {}
    console.print(
        f"retrain after day {retrain.day}: {summary.get('outcome')} "
        f"{summary.get('serving_version')} -> {summary.get('candidate_version')}; "
        + "  ".join(f"{k} {v:.1f}s" for k, v in summary.get("seconds", {}).items())
        + (f"; {'; '.join(summary['reasons'])}" if summary.get("reasons") else "")
    )
    arm = next((a for a in arms if a == retrain.model), arms[-1])
    check = swap_check(result, arm, arms[0], retrain.day)
    console.print(
        f"{arm} true CTR (no download noise): days {check['before_days']} "
        f"{100 * check['true_ctr_before']:.3f}% ({check['ratio_to_control_before']:.3f}x {arms[0]}), "
        f"days {check['after_days']} {100 * check['true_ctr_after']:.3f}% "
        f"({check['ratio_to_control_after']:.3f}x {arms[0]}): " + _swap_verdict(summary, check)
    )
    return {"retrain": summary, "swap_check": check}


def _swap_verdict(summary: dict[str, Any], check: dict[str, Any]) -> str:
    """The check's verdict; "no swap" when the retrain published nothing (the same version served on)."""
    if summary.get("outcome") != "published":
        return f"no swap (retrain {summary.get('outcome')}): the serving version kept serving"
    return "no drop" if check["no_drop"] else "[red]dropped[/red]"


def _print_events(result: SimulationResult) -> None:
    posted = result.posted
    console.print(
        f"POST /events: {posted.accepted:,} accepted, {posted.duplicates:,} duplicates, "
        f"{sum(posted.rejected.values()):,} rejected in {posted.batches:,} batches"
    )
    for code, count in posted.rejected.items():
        console.print(f"  [red]{count:,} rejected ({code})[/red]: {posted.examples[code]}")
    if posted.fallback is not None:
        console.print(
            "[yellow]event times: the service refuses event times of the simulated days "
            f"({posted.fallback}); the events were sent on the server's clock, so the report's "
            "per-day breakdown shows the real UTC day(s) of the run, not the simulated days.[/yellow]"
        )


def _print_report(report: ExperimentReport, png: Path | None) -> None:
    from pipeline.report_cli import print_report
    from service.report.chart import render_daily_chart

    print_report(report)
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(render_daily_chart(report))
        console.print(f"per-day lift chart written to {png}")


def _print_list_metrics(result: SimulationResult, arms: list[str], png: Path | None) -> list[ListMetricsRow]:
    from simulation.listmetrics import list_metrics
    from simulation.listreport import list_metrics_tables, write_list_metrics_chart

    rows = list_metrics(result.served_lists(), arm_order=arms)
    for table in list_metrics_tables(rows):
        console.print(table)
    if png is not None and rows:
        write_list_metrics_chart(rows, png)
        console.print(f"list-metrics chart written to {png}")
    return rows


def client_daily_counts(result: SimulationResult) -> list[dict[str, Any]]:
    """Per simulated day and arm: users, page views, downloads and the sum of true probabilities shown."""
    import numpy as np

    log = result.log
    from simulation.retrain_demo import versions_by_day

    arms, days, users = np.asarray(log.arms, dtype=str), np.asarray(log.days), np.asarray(log.users)
    downloads, truth = np.asarray(log.downloads), np.asarray(log.true_ctr_sum)
    versions = versions_by_day(result)
    counts: list[dict[str, Any]] = []
    for day in range(result.config.days):
        for arm in sorted(set(log.arms)):
            mask = (days == day) & (arms == arm)
            counts.append(
                {
                    "day": day,
                    "date": str(result.config.start_date() + timedelta(days=day)),
                    "arm": arm,
                    "users": int(np.unique(users[mask]).size),
                    "page_views": int(mask.sum()),
                    "downloads": int(downloads[mask].sum()),
                    "true_probability_sum": float(truth[mask].sum()),
                    "versions": versions.get(day, {}).get(arm, []),
                }
            )
    return counts


def write_figures(
    path: Path,
    result: SimulationResult,
    report: ExperimentReport,
    rows: list[ListMetricsRow],
    elapsed: float,
    retrain: dict[str, Any] | None = None,
) -> None:
    """The run's scenario, client-side counts, event outcome, report and list metrics, as JSON."""
    figures = {
        "scenario": {**asdict(result.config), "first_day": str(result.config.start_date())},
        "seconds": elapsed,
        "page_views": len(result.log.users),
        "event_time": result.event_time.value,
        "events": {
            "accepted": result.posted.accepted,
            "duplicates": result.posted.duplicates,
            "rejected": dict(result.posted.rejected),
            "fallback": result.posted.fallback,
        },
        "client_daily": client_daily_counts(result),
        "report": json.loads(report.model_dump_json()),
        "list_metrics": [asdict(row) for row in rows],
    }
    if retrain is not None:
        figures["retrain"] = retrain
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``apprank simulate`` to the CLI."""
    app.command("simulate")(simulate_command)
