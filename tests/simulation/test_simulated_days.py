"""With a service that accepts back-dated event times, the report shows one row per simulated day.

By default the service refuses event times more than 300 s before the served list, so ``apprank
simulate`` falls back to the server's clock (``test_simulate.py``). Here the allowance is widened with
``EventLogConfig.clock_skew_s`` (``APPRANK_EVENT_CLOCK_SKEW_S``, which ``make demo`` sets).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from apprank.bootstrap import BootstrapResult
from service.app import create_app
from service.settings import ServiceSettings
from simulation.ab_test import Simulation, SimulationConfig
from simulation.eventpost import EventTime
from simulation.simulate import fetch_report
from simulation.storefront import Storefront, load_world
from tests.conftest import require
from tests.simulation.test_simulate import _free_port

pytestmark = pytest.mark.slow
FIRST_DAY = datetime.now(UTC).date() - timedelta(days=5)


@pytest.fixture
def lenient_server(tiny_store: BootstrapResult, tmp_path: Path) -> Iterator[str]:
    """The service in a thread (uvicorn), accepting event times up to 60 days before the served list."""
    settings = ServiceSettings(
        models_dir=tiny_store.config.models_dir,
        database_url=f"sqlite:///{tmp_path / 'days.db'}",
        experiments_file=tiny_store.config.experiments_file,
        event_clock_skew_s=60 * 86_400.0,
    )
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        require(server.started, "an in-process apprank server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_simulated_days_reach_the_reports_daily_breakdown(
    lenient_server: str, tiny_store: BootstrapResult
) -> None:
    config = SimulationConfig(users=12, days=3, visit_share=1.0, views_per_visit=1.0, candidates=25)
    config = replace(config, list_size=4, event_time=EventTime.SIMULATED, first_day=FIRST_DAY, concurrency=3)
    simulation = Simulation(Storefront(load_world(tiny_store.world_file)), config)

    async def run() -> tuple[int, list[date]]:
        async with httpx.AsyncClient(base_url=lenient_server, timeout=30) as client:
            result = await simulation.run(client)
            report = await fetch_report(client, config.experiment)
            return result.posted.accepted, [day.day for day in report.daily]

    accepted, days = asyncio.run(run())
    assert accepted >= 12 * 3 * 4
    assert days == [FIRST_DAY + timedelta(days=d) for d in range(3)]
