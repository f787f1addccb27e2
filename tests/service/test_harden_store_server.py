"""Issue 16, case 1, against the real service: ``uvicorn --factory service.app:app_from_env --workers 2``
on an SQLite file made immutable (``chattr +i`` on the database and its WAL: even root cannot write),
one worker SIGKILLed and restarted by uvicorn meanwhile, then the files made writable again. Every
worker must recover without a restart: /readyz refuses while writes fail, and afterwards every
rank-then-event pair and every ``PUT /experiments`` succeeds (a 503 with Retry-After, retried, is the
worst a client sees; never a 500 or a final 422)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require, wait_until
from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle
from tests.service.conftest import ADMIN, TOKENS, fifty_fifty, rank_body
from tests.service.test_events_durability import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
pytest_plugins = ["tests.service.test_events_support"]


class Workers:
    """The service under uvicorn with several worker processes, in a child process group."""

    def __init__(self, env: dict[str, str], log: Path, workers: int) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env"]
        command += ["--port", self.url.rsplit(":", 1)[1], "--workers", str(workers), "--log-level", "warning"]
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.count = workers
        wait_until(lambda: len(self.worker_pids()) == workers and self.ready(), 90, "workers ready")

    def worker_pids(self) -> set[int]:
        """The uvicorn worker processes (spawned children running the app, not the resource tracker)."""
        assert self.process.poll() is None, self.log.read_text()
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        pids = set()
        for pid in map(int, children):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"resource_tracker" not in cmdline:
                pids.add(pid)
        return pids

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def service_env(tmp_path: Path, database_url: str, prefix: str = "apprank_") -> dict[str, str]:
    """The environment of a service with bundles ``lr`` and ``lr2``, the event log and admin tokens."""
    encoder = fit_frappe_encoder()
    for seed, name in ((1, "lr"), (2, "lr2")):
        bundle = tmp_path / "models" / name
        write_lr_bundle(bundle, encoder, random_weights(encoder, seed=seed), version="20260101.000000")
    env = dict(os.environ)
    env.update(
        APPRANK_MODELS_DIR=str(tmp_path / "models"),
        APPRANK_DATABASE_URL=database_url,
        APPRANK_TABLE_PREFIX=prefix,
        APPRANK_ORT_DEVICE="cpu",
        APPRANK_EVENT_LOG="true",
        APPRANK_ADMIN_TOKEN=TOKENS,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Workers, list[Path]]]:
    require(os.geteuid() == 0 and shutil.which("chattr") is not None, "root and chattr")
    db_file = tmp_path / "apprank.db"
    workers = Workers(service_env(tmp_path, f"sqlite:///{db_file}"), tmp_path / "server.log", workers=2)
    files = [db_file, db_file.with_name(db_file.name + "-wal")]
    try:
        yield workers, files
    finally:
        chattr(files, on=False)
        workers.stop()


def chattr(files: list[Path], *, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, files)], check=True)


def until_not_503(client: httpx.Client, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """Send until the answer is not a 503 (each 503 must carry Retry-After), for up to 30 s."""

    def settled() -> httpx.Response | None:
        response = client.request(method, path, json=body, headers=ADMIN)
        if response.status_code != 503:
            return response
        assert response.headers.get("retry-after") == "1", response.text
        return None

    return wait_until(settled, 30, f"{method} {path} answering other than 503", interval=0.1)


def rank_then_event(client: httpx.Client, user: int) -> tuple[int, httpx.Response]:
    """/rank, then an impression of its first item: /rank's status and the final /events answer."""
    ranked = client.post("/rank", json=rank_body(5, user=str(user)))
    if ranked.status_code != 200:
        return ranked.status_code, ranked
    answer = ranked.json()
    impression = {
        "event_id": f"i-{answer['request_id']}",
        "type": "impression",
        "request_id": answer["request_id"],
        "app_id": answer["items"][0]["app_id"],
        "user_id": str(user),
    }
    return 200, until_not_503(client, "POST", "/events", {"events": [impression]})


def test_every_worker_recovers_once_the_sqlite_file_is_writable_again(
    service: tuple[Workers, list[Path]],
) -> None:
    """Case 1: immutable files, a worker SIGKILLed and restarted by uvicorn, then writable again."""
    workers, files = service
    with httpx.Client(base_url=workers.url, timeout=10.0) as client:
        assert client.put("/experiments/x", json=fifty_fifty(), headers=ADMIN).status_code == 201
        before = workers.worker_pids()
        chattr(files, on=True)
        os.kill(sorted(before)[0], signal.SIGKILL)
        wait_until(lambda: len(workers.worker_pids() - before) == 1, 60, "uvicorn restarted the worker")
        ranked_while_down = [client.post("/rank", json=rank_body(5, user=str(u))) for u in range(5)]
        assert all(response.status_code == 200 for response in ranked_while_down)
        ready = [client.get("/readyz") for _ in range(6)]
        assert {response.status_code for response in ready} == {503}, [r.text for r in ready]
        down = client.put("/experiments/x", json=fifty_fifty(model_b="lr"), headers=ADMIN)
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        chattr(files, on=False)
        wait_until(lambda: all(workers.ready() for _ in range(6)), 30, "every worker ready again")
        # the lists ranked while the file was immutable were retried: their events are accepted now
        for user, response in enumerate(ranked_while_down):
            item = response.json()["items"][0]["app_id"]
            impression = {"event_id": f"d{user}", "type": "impression", "app_id": item,
                          "request_id": response.json()["request_id"], "user_id": str(user)}  # fmt: skip
            answer = until_not_503(client, "POST", "/events", {"events": [impression]})
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
        pairs = [rank_then_event(client, user) for user in range(100, 120)]
        assert [(status, r.status_code, r.json().get("accepted")) for status, r in pairs] == [
            (200, 200, 1)
        ] * 20
        puts = [
            until_not_503(client, "PUT", "/experiments/x", fifty_fifty(model_b=m)) for m in ["lr", "lr2"] * 5
        ]
        assert [response.status_code for response in puts] == [200] * 10, [r.text for r in puts]


def test_terminated_postgresql_connections_under_load_lose_nothing(
    tmp_path: Path, pg_schema_url: str
) -> None:
    """Cases 3 and 4 on PostgreSQL: the service's connections terminated again and again while clients
    rank, post events and read experiments and reports: no 500, no served list lost (every event is
    accepted, after 503 Retry-After answers at worst)."""
    from tests.service.test_harden_store import terminate_backends

    marker = f"apprank_h16s_{os.getpid()}"
    env = service_env(tmp_path, f"{pg_schema_url}&application_name={marker}", prefix="pgterm_")
    workers = Workers(env, tmp_path / "server.log", workers=2)
    stop = threading.Event()

    def terminate() -> None:
        while not stop.wait(0.25):
            terminate_backends(pg_schema_url, marker)

    killer = threading.Thread(target=terminate)
    try:
        with httpx.Client(base_url=workers.url, timeout=10.0) as client:
            assert client.put("/experiments/x", json=fifty_fifty(), headers=ADMIN).status_code == 201
            killer.start()
            pairs = [rank_then_event(client, user) for user in range(30)]
            reads = [until_not_503(client, "GET", path, {}) for path in READS * 4]
        assert [(status, r.status_code, r.json().get("accepted")) for status, r in pairs] == [
            (200, 200, 1)
        ] * 30
        assert [r.status_code for r in reads] == [200] * len(reads), [
            r.text for r in reads if r.status_code != 200
        ]
    finally:
        stop.set()
        if killer.is_alive():
            killer.join(10)
        workers.stop()


READS = ["/experiments", "/experiments/x", "/experiments/x/audit", "/experiments/x/report"]
