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


def report_router(lookup: ExperimentLookup) -> APIRouter:
    """The report routes; ``lookup`` finds an experiment's definition by name."""
    router = APIRouter(tags=["report"])

    def report(name: str, start: date | None, end: date | None, event_log: EventLog) -> ExperimentReport:
        experiment = lookup(name)
        if experiment is None:
            raise HTTPException(404, detail={"field": "name", "reason": f"unknown experiment {name!r}"})
        if start is not None and end is not None and start > end:
            raise HTTPException(422, detail={"field": "start", "reason": f"start {start} is after end {end}"})
        return build_report(event_log.store, experiment, start, end)

    @router.get("/experiments/{name}/report", response_model=ExperimentReport)
    def get_report(
        name: str,
        event_log: Annotated[EventLog, Depends(get_event_log)],
        start: Annotated[date | None, Query(description="first UTC day, inclusive")] = None,
        end: Annotated[date | None, Query(description="last UTC day, inclusive")] = None,
    ) -> ExperimentReport:
        """Per-arm CTR and CVR with 95 % intervals, lifts over the control, SRM check, daily breakdown."""
        return report(name, start, end, event_log)

    @router.get("/experiments/{name}/report.png", responses={200: {"content": {"image/png": {}}}})
    def get_report_chart(
        name: str,
        event_log: Annotated[EventLog, Depends(get_event_log)],
        start: Annotated[date | None, Query(description="first UTC day, inclusive")] = None,
        end: Annotated[date | None, Query(description="last UTC day, inclusive")] = None,
    ) -> Response:
        """The daily CTR and CVR lift chart (501 when matplotlib is not installed)."""
        if not chart_available():
            raise HTTPException(
                501, detail={"field": "", "reason": "charts need matplotlib (the train extra)"}
            )
        return Response(render_daily_chart(report(name, start, end, event_log)), media_type="image/png")

    return router
