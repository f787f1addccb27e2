"""Two uvicorn workers on PostgreSQL, each with its own writer process: every served list is stored by
the time the service has stopped, and every acknowledged event with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import wait_until
from tests.service.conftest import TOKENS, rank_body
from tests.service.test_e2e import LAUNCH, free_port, fresh_post

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.service.test_events_support"]
PREFIX = "wk_"


@pytest.fixture
def pg_server(
    tmp_path: Path, models_dir: Path, pg_schema_url: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = dict(
        os.environ,
        APPRANK_DATABASE_URL=pg_schema_url,
        APPRANK_ADMIN_TOKEN=TOKENS,
        APPRANK_TABLE_PREFIX=PREFIX,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-c", LAUNCH, "serve", "--models", str(models_dir), "--port", str(port)]
    command += ["--workers", "2", "--metrics-dir", str(tmp_path / "metrics")]
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[2])
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, "server exited"
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, 60, "server ready", interval=0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def post_events(url: str, events: list[dict[str, object]]) -> int:
    """POST until acknowledged (503: the list is still in the other worker's ring); events accepted."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(f"{url}/events", json={"events": events}, timeout=10)
        if response.status_code == 200:
            body = response.json()
            assert body["rejected"] == [], body
            return int(body["accepted"])
        assert response.status_code == 503 and time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_two_workers_store_every_list_and_event_on_postgresql(
    pg_server: tuple[str, subprocess.Popen[bytes]], pg_schema_url: str
) -> None:
    url, process = pg_server
    served = [fresh_post(url, rank_body(30, user=str(k % 9))).json() for k in range(60)]
    accepted = 0
    for k, body in enumerate(served[:20]):
        item = body["items"][0]["app_id"]
        event = {"event_id": f"e{k}", "type": "impression", "request_id": body["request_id"], "app_id": item}
        accepted += post_events(url, [{**event, "user_id": str(k % 9)}])
    process.terminate()
    assert process.wait(timeout=30) == 0
    with psycopg.connect(pg_schema_url) as connection:
        lists = connection.execute(f"SELECT COUNT(*) FROM {PREFIX}served_lists").fetchone()
        events = connection.execute(f"SELECT COUNT(*) FROM {PREFIX}events").fetchone()
        versions = connection.execute(f"SELECT COUNT(*) FROM {PREFIX}item_features").fetchone()
    assert lists is not None and events is not None and versions is not None
    assert (lists[0], events[0], accepted) == (60, 20, 20)
    assert versions[0] == 30  # rank_body's 30 apps, one features version each, whatever the worker
