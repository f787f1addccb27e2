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
from service.report.build import ExperimentArms, build_report
from service.report.chart import chart_available, render_daily_chart
from service.report.models import ExperimentReport

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


def report_router(
    event_log: Callable[..., EventLog], experiments: Callable[..., ExperimentLookup]
) -> APIRouter:
    """The report routes, over the event log and experiment lookup those dependencies yield."""
    router = APIRouter(tags=["report"])

    def report(
        name: str, start: date | None, end: date | None, log: EventLog, lookup: ExperimentLookup
    ) -> ExperimentReport:
        experiment = lookup(name)
        if experiment is None:
            raise RequestError.at(("path", "name"), f"unknown experiment {name!r}", "not_found", 404)
        if start is not None and end is not None and start > end:
            raise RequestError.at(("query", "start"), f"start {start} is after end {end}", "date_order")
        return build_report(log.store, experiment, start, end)

    @router.get("/experiments/{name}/report", response_model=ExperimentReport, responses=documented(404, 422))
    def get_report(
        name: str,
        start: Annotated[date | None, Query(description="first UTC day, inclusive")] = None,
        end: Annotated[date | None, Query(description="last UTC day, inclusive")] = None,
        log: EventLog = Depends(event_log),  # noqa: B008 - the dependency is the factory's argument
        lookup: ExperimentLookup = Depends(experiments),  # noqa: B008
    ) -> ExperimentReport:
        """Per-arm CTR and CVR with 95 % intervals, lifts over the control, SRM check, daily breakdown."""
        return report(name, start, end, log, lookup)

    @router.get(
        "/experiments/{name}/report.png",
        responses={200: {"content": {"image/png": {}}}, **documented(404, 422, 501)},
    )
    def get_report_chart(
        name: str,
        start: Annotated[date | None, Query(description="first UTC day, inclusive")] = None,
        end: Annotated[date | None, Query(description="last UTC day, inclusive")] = None,
        log: EventLog = Depends(event_log),  # noqa: B008 - the dependency is the factory's argument
        lookup: ExperimentLookup = Depends(experiments),  # noqa: B008
    ) -> Response:
        """The daily CTR and CVR lift chart (501 when matplotlib is not installed)."""
        if not chart_available():
            raise RequestError.at((), "charts need matplotlib (the train extra)", "not_installed", 501)
        return Response(render_daily_chart(report(name, start, end, log, lookup)), media_type="image/png")

    return router
