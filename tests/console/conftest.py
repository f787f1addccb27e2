"""One real service (``apprank serve`` under uvicorn, on a free port) and one headless Chromium for
every console test; the server's SQLite store starts with a simulated experiment's events in it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from service.db import Database
from service.events.store import open_event_store
from tests.conftest import REPO, require
from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle
from tests.service.conftest import ADMIN, TOKENS, fifty_fifty
from tests.service.report_events import simulate

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
LAUNCH = (
    "import typer; from service.cli import register; app = typer.Typer(); "
    "app.callback()(lambda: None); register(app); app()"
)
EXPERIMENT = "default"  # the service's default experiment: /rank requests without one are routed by it
TODAY = int(time.time() // 86400)


@dataclass(frozen=True)
class Service:
    url: str
    shots: Path  # where the tests save their screenshots


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _seed_events(url: str) -> None:
    """Ten days of the experiment (ending yesterday), users with history in another experiment before."""
    db = Database(url)
    store = open_event_store(db, "apprank_")
    store.migrate()
    logged = simulate(seed=3, users=240, days=10, experiment=EXPERIMENT, first=TODAY - 10)
    store.insert_events_unchecked(logged.rows)
    store.rebuild_user_days()
    db.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("console")
    encoder = fit_frappe_encoder()
    write_lr_bundle(
        root / "models" / "lr", encoder, random_weights(encoder, seed=1), version="20260101.000000"
    )
    write_lr_bundle(
        root / "models" / "lr2", encoder, random_weights(encoder, seed=2), version="20260102.000000"
    )
    database = f"sqlite:///{root / 'console.db'}"
    _seed_events(database)
    port = _free_port()
    env = dict(
        os.environ, APPRANK_DATABASE_URL=database, APPRANK_ADMIN_TOKEN=TOKENS, APPRANK_SYNC_INTERVAL_S="0.1"
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-c", LAUNCH, "serve", "--models", str(root / "models"), "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        httpx.put(f"{url}/experiments/{EXPERIMENT}", json=fifty_fifty(), headers=ADMIN).raise_for_status()
        shots = root / "screenshots"
        shots.mkdir()
        yield Service(url, shots)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in this thread until
    it stops, and later tests that call ``asyncio.run`` must not find it."""
    require(CHROMIUM.is_file(), f"chromium at {CHROMIUM} (make tools installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
