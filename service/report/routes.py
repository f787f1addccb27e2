"""``GET /experiments/{name}/report`` (JSON) and ``GET /experiments/{name}/report.png`` (the chart).

The router reads the event store from ``app.state.event_log`` (as ``events_router`` does) and gets an
experiment's arms, weights and control from an ``ExperimentLookup`` given to the factory, so it does
not depend on how experiments are stored. ``lookup_from_store`` adapts the service's experiment store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from service.events.log import EventLog
from service.events.routes import get_event_log
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


def report_router(lookup: ExperimentLookup) -> APIRouter:
    """The report routes; ``lookup`` finds an experiment's definition by name."""
    router = APIRouter(tags=["report"])

    def report(
        name: str,
        start: date | None,
        end: date | None,
        event_log: EventLog,
        options: AnalysisOptions | None = None,
    ) -> ExperimentReport:
        experiment = lookup(name)
        if experiment is None:
            raise HTTPException(404, detail={"field": "name", "reason": f"unknown experiment {name!r}"})
        if start is not None and end is not None and start > end:
            raise HTTPException(422, detail={"field": "start", "reason": f"start {start} is after end {end}"})
        return build_report(event_log.store, experiment, start, end, options=options)

    @router.get("/experiments/{name}/report", response_model=ExperimentReport)
    def get_report(
        name: str,
        event_log: Annotated[EventLog, Depends(get_event_log)],
        start: StartDay = None,
        end: EndDay = None,
        cuped_lookback_days: Lookback = CUPED_LOOKBACK_DAYS,
        sequential_tuning_users: Tuning = DEFAULT_TUNING_USERS,
    ) -> ExperimentReport:
        """Per-arm CTR and CVR with fixed-horizon and always-valid intervals, CUPED lifts over the control
        with a Holm-corrected decision, SRM check, daily breakdown."""
        design = SequentialDesign(tuning_users=sequential_tuning_users)
        options = AnalysisOptions(design=design, cuped_lookback_days=cuped_lookback_days)
        return report(name, start, end, event_log, options)

    def chart(
        name: str, start: date | None, end: date | None, event_log: EventLog, fmt: ChartFormat
    ) -> Response:
        if not chart_available():
            raise HTTPException(
                501, detail={"field": "", "reason": "charts need matplotlib (the serve extra)"}
            )
        body = render_daily_chart(report(name, start, end, event_log), fmt)
        return Response(body, media_type="image/png" if fmt == "png" else "image/svg+xml")

    @router.get("/experiments/{name}/report.png", responses={200: {"content": {"image/png": {}}}})
    def get_report_chart(
        name: str,
        event_log: Annotated[EventLog, Depends(get_event_log)],
        start: StartDay = None,
        end: EndDay = None,
    ) -> Response:
        """The daily CTR and CVR lift chart as PNG."""
        return chart(name, start, end, event_log, "png")

    @router.get("/experiments/{name}/report.svg", responses={200: {"content": {"image/svg+xml": {}}}})
    def get_report_svg(
        name: str,
        event_log: Annotated[EventLog, Depends(get_event_log)],
        start: StartDay = None,
        end: EndDay = None,
    ) -> Response:
        """The daily CTR and CVR lift chart as SVG (what the web console shows)."""
        return chart(name, start, end, event_log, "svg")

    return router
