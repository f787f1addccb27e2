"""Nothing acknowledged is lost: the real service (``service.app:app_from_env`` with the event log, under
uvicorn) is killed with SIGKILL in the middle of a load of POST /events, restarted, and every event
that was answered with a 200 is found in the store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.db import Database
from service.events.store import open_event_store
from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle
from tests.service.test_events_support import StoreTarget, served_list

pytest_plugins = ["tests.service.test_events_support"]
REPO = Path(__file__).resolve().parents[2]
WORKERS, BATCHES, LISTS_PER_BATCH = 4, 200, 5
REQUESTS = WORKERS * BATCHES * LISTS_PER_BATCH
APPS = ("a", "b", "c")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """``uvicorn --factory service.app:app_from_env`` (what ``apprank serve`` runs) in a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), "--log-level", "warning"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_ready(log)

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not become ready:\n{log.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture
def setup(target: StoreTarget, tmp_path: Path) -> Iterator[dict[str, str]]:
    encoder = fit_frappe_encoder()
    write_lr_bundle(tmp_path / "models" / "lr", encoder, random_weights(encoder), version="20260101.000000")
    db = Database(target.url)
    store = open_event_store(db, target.prefix)
    store.migrate()
    store.write_served([served_list(f"r{r}", user_id=f"u{r % 50}", app_ids=APPS) for r in range(REQUESTS)])
    db.close()
    env = dict(os.environ)
    env.update(
        APPRANK_MODELS_DIR=str(tmp_path / "models"),
        APPRANK_DATABASE_URL=target.url,
        APPRANK_TABLE_PREFIX=target.prefix,
        APPRANK_ORT_DEVICE="cpu",
        APPRANK_EVENT_LOG="true",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    yield env


def batch_of(worker: int, number: int) -> list[dict[str, object]]:
    """30 events: impressions and downloads of the items of 5 served lists no other batch touches."""
    events: list[dict[str, object]] = []
    for k in range(LISTS_PER_BATCH):
        request = (worker * BATCHES + number) * LISTS_PER_BATCH + k
        for app in APPS:
            for kind in ("impression", "download"):
                events.append(
                    {"event_id": f"{request}-{app}-{kind}", "type": kind,
                     "request_id": f"r{request}", "app_id": app, "user_id": f"u{request % 50}"}
                )  # fmt: skip
    return events


def load(url: str, worker: int, acknowledged: list[str], stop: threading.Event) -> None:
    """Post batches until the server dies; remember the ids of every event a 200 covered."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for number in range(BATCHES):
            if stop.is_set():
                return
            batch = batch_of(worker, number)
            try:
                response = client.post("/events", json={"events": batch})
            except httpx.TransportError:
                return
            if response.status_code == 200:
                refused = {r["index"] for r in response.json()["rejected"]}
                acknowledged.extend(str(e["event_id"]) for i, e in enumerate(batch) if i not in refused)


@pytest.mark.slow
def test_every_acknowledged_event_survives_sigkill(
    setup: dict[str, str], target: StoreTarget, tmp_path: Path
) -> None:
    server = Server(setup, tmp_path / "server.log")
    acknowledged: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(server.url, w, acknowledged, stop)) for w in range(WORKERS)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 3_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()  # in the middle of the load: posts are in flight
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    assert server.process.returncode == -signal.SIGKILL
    assert 3_000 <= len(acknowledged) < REQUESTS * 6  # killed while the load was still going
    restarted = Server(setup, tmp_path / "server.log")
    try:
        db = Database(target.url)
        with db.read() as cursor:
            cursor.execute(f"SELECT event_id FROM {target.prefix}events")
            stored = {row[0] for row in cursor.fetchall()}
        db.close()
        lost = set(acknowledged) - stored
        assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:5]}"
        # resending an acknowledged batch to the restarted service: all duplicates
        resent = httpx.post(f"{restarted.url}/events", json={"events": batch_of(0, 0)}, timeout=10.0)
        assert resent.status_code == 200 and resent.json()["accepted"] == 0
    finally:
        restarted.stop()
