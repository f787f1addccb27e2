"""``/ui`` pages (one HTML shell, the page picked by the path), their assets, and the list summary.

The assets ship inside the package (``package-data``), so the serving image and a wheel have them.
Every page gets a strict Content-Security-Policy: only the service's own scripts, styles and images.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from service.experiments.models import Experiment
from service.report.build import srm_check
from service.state import ServiceState, get_state

STATIC = resources.files("service.console") / "static"
POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)


class ExperimentSummary(BaseModel):
    """One row of the experiments list: the stored experiment, its users per arm and the SRM flag.

    ``users`` is None when the service runs without the event log (nothing to count).
    """

    model_config = ConfigDict(frozen=True)

    experiment: Experiment
    users: dict[str, int] | None
    srm_flagged: bool | None


def console_router() -> APIRouter:
    """GET /ui, /ui/experiments/{name}, /ui/models and GET /ui/api/experiments."""
    router = APIRouter(include_in_schema=False)
    shell = (STATIC / "index.html").read_text(encoding="utf-8")

    def page() -> HTMLResponse:
        return HTMLResponse(shell, headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"})

    router.add_api_route("/ui", page, methods=["GET"])
    router.add_api_route("/ui/experiments/{name}", page, methods=["GET"])
    router.add_api_route("/ui/models", page, methods=["GET"])

    @router.get("/ui/api/experiments", response_model=list[ExperimentSummary])
    async def summaries(state: Annotated[ServiceState, Depends(get_state)]) -> list[ExperimentSummary]:
        """Every experiment with its users per arm (all days kept) and whether the split is off."""
        experiments: list[Experiment] = await asyncio.to_thread(state.store.experiments)
        event_log = state.event_log
        counts = None if event_log is None else await asyncio.to_thread(event_log.store.user_counts)
        return [_summary(experiment, counts) for experiment in experiments]

    return router


def _summary(experiment: Experiment, counts: list[tuple[str, str, int]] | None) -> ExperimentSummary:
    if counts is None:
        return ExperimentSummary(experiment=experiment, users=None, srm_flagged=None)
    users = {arm: n for name, arm, n in counts if name == experiment.name}
    weights: Mapping[str, float] = {arm.name: arm.weight for arm in experiment.arms}
    return ExperimentSummary(
        experiment=experiment,
        users={arm: users.get(arm, 0) for arm in [*weights, *sorted(set(users) - set(weights))]},
        srm_flagged=srm_check(users, weights).flagged,
    )


def mount_console(app: FastAPI) -> None:
    """Add the console's pages and its static assets (``/ui/static``) to ``app``."""
    app.include_router(console_router())
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="console-static")
