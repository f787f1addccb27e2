"""``GET /experiments/{name}/report`` (JSON) and ``GET /experiments/{name}/report.png`` (the chart).

The factory is given two FastAPI dependencies: one yields the ``EventLog`` (as ``events_router``'s does),
the other an ``ExperimentLookup`` (an experiment's arms, weights and control by name), so the report does
not depend on how experiments are stored. ``lookup_from_store`` adapts the service's experiment store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Response

from service.errors import RequestError, documented
from service.events.log import EventLog
from service.report.build import CUPED_LOOKBACK_DAYS, AnalysisOptions, ExperimentArms, build_report
from service.report.chart import ChartFormat, chart_available, render_daily_chart
from service.report.models import ExperimentReport
from service.report.sequential import DEFAULT_TUNING_USERS, SequentialDesign

ExperimentLookup = Callable[[str], ExperimentArms | None]


class _ArmLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> float: ...


class _ExperimentLike(Protocol):
    @property
    def arms(self) -> list[Any]: ...
    @property
    def control(self) -> str: ...


class _ExperimentSource(Protocol):
    def get(self, name: str) -> Any: ...


def arms_of(name: str, experiment: _ExperimentLike) -> ExperimentArms:
    """``ExperimentArms`` of an object with ``arms`` (each: ``name``, ``weight``) and ``control``."""
    arms: list[_ArmLike] = list(experiment.arms)
    return ExperimentArms(
        name=name, weights={arm.name: float(arm.weight) for arm in arms}, control=experiment.control
    )


def lookup_from_store(store: _ExperimentSource) -> ExperimentLookup:
    """An ``ExperimentLookup`` over a store whose ``get(name)`` returns an experiment or None."""

    def lookup(name: str) -> ExperimentArms | None:
        experiment = store.get(name)
        return None if experiment is None else arms_of(name, experiment)

    return lookup


StartDay = Annotated[date | None, Query(description="first UTC day, inclusive")]
EndDay = Annotated[date | None, Query(description="last UTC day, inclusive")]
Lookback = Annotated[
    int,
    Query(ge=0, le=365, description="CUPED pre-period: days before each user's first day (0: off)"),
]
Tuning = Annotated[
    float,
    Query(gt=0, le=1e9, description="users at which the always-valid interval is tightest"),
]


def report_router(
    event_log: Callable[..., EventLog], experiments: Callable[..., ExperimentLookup]
) -> APIRouter:
    """The report routes, over the event log and experiment lookup those dependencies yield."""
    router = APIRouter(tags=["report"])

    def report(
        name: str,
        start: date | None,
        end: date | None,
        log: EventLog,
        lookup: ExperimentLookup,
        options: AnalysisOptions | None = None,
    ) -> ExperimentReport:
        experiment = lookup(name)
        if experiment is None:
            raise RequestError.at(("path", "name"), f"unknown experiment {name!r}", "not_found", 404)
        if start is not None and end is not None and start > end:
            raise RequestError.at(("query", "start"), f"start {start} is after end {end}", "date_order")
        return build_report(log.store, experiment, start, end, options=options)

    @router.get("/experiments/{name}/report", response_model=ExperimentReport, responses=documented(404, 422))
    def get_report(
        name: str,
        start: StartDay = None,
        end: EndDay = None,
        cuped_lookback_days: Lookback = CUPED_LOOKBACK_DAYS,
        sequential_tuning_users: Tuning = DEFAULT_TUNING_USERS,
        log: EventLog = Depends(event_log),  # noqa: B008 - the dependency is the factory's argument
        lookup: ExperimentLookup = Depends(experiments),  # noqa: B008
    ) -> ExperimentReport:
        """Per-arm CTR and CVR with fixed-horizon and always-valid intervals, CUPED lifts over the control
        with a Holm-corrected decision, SRM check, daily breakdown."""
        design = SequentialDesign(tuning_users=sequential_tuning_users)
        options = AnalysisOptions(design=design, cuped_lookback_days=cuped_lookback_days)
        return report(name, start, end, log, lookup, options)

    def chart(
        name: str,
        start: date | None,
        end: date | None,
        log: EventLog,
        lookup: ExperimentLookup,
        fmt: ChartFormat,
    ) -> Response:
        if not chart_available():
            raise RequestError.at((), "charts need matplotlib (the serve extra)", "not_installed", 501)
        body = render_daily_chart(report(name, start, end, log, lookup), fmt)
        return Response(body, media_type="image/png" if fmt == "png" else "image/svg+xml")

    @router.get(
        "/experiments/{name}/report.png",
        responses={200: {"content": {"image/png": {}}}, **documented(404, 422, 501)},
    )
    def get_report_chart(
        name: str,
        start: StartDay = None,
        end: EndDay = None,
        log: EventLog = Depends(event_log),  # noqa: B008
        lookup: ExperimentLookup = Depends(experiments),  # noqa: B008
    ) -> Response:
        """The daily CTR and CVR lift chart as PNG."""
        return chart(name, start, end, log, lookup, "png")

    @router.get(
        "/experiments/{name}/report.svg",
        responses={200: {"content": {"image/svg+xml": {}}}, **documented(404, 422, 501)},
    )
    def get_report_svg(
        name: str,
        start: StartDay = None,
        end: EndDay = None,
        log: EventLog = Depends(event_log),  # noqa: B008
        lookup: ExperimentLookup = Depends(experiments),  # noqa: B008
    ) -> Response:
        """The daily CTR and CVR lift chart as SVG (what the web console shows)."""
        return chart(name, start, end, log, lookup, "svg")

    return router
