"""End to end over real HTTP: ``serve`` (the CLI command) with 2 uvicorn workers on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model.encoder import FeatureEncoder
from tests.conftest import wait_until
from tests.service.bundles import random_weights, write_lr_bundle
from tests.service.conftest import ADMIN, TOKENS, fifty_fifty, rank_body

pytestmark = pytest.mark.slow
LAUNCH = (
    "import typer; from service.cli import register; app = typer.Typer(); "
    "app.callback()(lambda: None); register(app); app()"
)
METRIC_NAMES = [
    "apprank_http_requests_total",
    "apprank_http_request_duration_seconds_bucket",
    "apprank_rank_duration_seconds_bucket",
    "apprank_model_inference_seconds_bucket",
    "apprank_rank_candidates_bucket",
    "apprank_feature_values_total",
    "apprank_feature_oov_total",
    "apprank_feature_missing_total",
    "apprank_model_loaded",
    "apprank_experiment_weight",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path, models_dir: Path) -> Iterator[str]:
    port = free_port()
    env = dict(
        os.environ,
        APPRANK_DATABASE_URL=f"sqlite:///{tmp_path / 'e2e.db'}",
        APPRANK_ADMIN_TOKEN=TOKENS,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-c", LAUNCH, "serve", "--models", str(models_dir), "--port", str(port)]
    command += ["--workers", "2", "--metrics-dir", str(tmp_path / "metrics")]
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[2])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def fresh_post(url: str, body: dict[str, object]) -> httpx.Response:
    """A new connection per request, so requests spread over both workers."""
    return httpx.post(f"{url}/rank", json=body, headers={"Connection": "close"}, timeout=10)


def test_rank_and_aggregated_metrics_over_http(server: str) -> None:
    body = rank_body(20)
    body["context"]["city"] = "nowhere"
    for _ in range(20):
        response = fresh_post(server, body)
        assert response.status_code == 200
        assert len(response.json()["items"]) == 20
    assert fresh_post(server, {"user_id": 1}).status_code == 422
    served = fresh_post(server, rank_body(2)).json()
    event = {"event_id": "e1", "type": "impression", "request_id": served["request_id"], "user_id": "3"}
    events = {"events": [event | {"app_id": served["items"][0]["app_id"]}]}

    def post_event() -> httpx.Response | None:  # the served list is written off the request path
        response = httpx.post(f"{server}/events", json=events)
        return response if response.status_code == 200 else None

    wait_until(post_event, 10, "the event log saw the served list")
    httpx.put(f"{server}/experiments/default", json=fifty_fifty(), headers=ADMIN).raise_for_status()

    def flushed_metrics() -> str | None:  # each worker's background thread flushes the feature counters
        text = httpx.get(f"{server}/metrics").text
        return text if 'apprank_feature_oov_total{feature="city"} 20.0' in text else None

    text = wait_until(flushed_metrics, 10, "the feature counters of both workers")
    for name in METRIC_NAMES:
        assert name in text, name
    assert 'apprank_http_requests_total{endpoint="/rank",status="200"} 21.0' in text
    assert 'apprank_feature_oov_total{feature="city"} 20.0' in text
    assert "user_id" not in text and 'app_id="' not in text


def test_an_experiment_change_reaches_both_workers_within_a_second(server: str) -> None:
    assert fresh_post(server, rank_body(3)).json()["experiment"] == "none"
    httpx.put(f"{server}/experiments/default", json=fifty_fifty(), headers=ADMIN).raise_for_status()

    def both_workers_see_it() -> bool:
        seen = {fresh_post(server, rank_body(3, user=f"u{i}")).json()["experiment"] for i in range(40)}
        return seen == {"default"}

    wait_until(both_workers_see_it, 1.0, "the change in both workers", interval=0.02)


def test_hot_reload_under_concurrent_load_fails_no_request(
    server: str, models_dir: Path, encoder: FeatureEncoder
) -> None:
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{server}/rank", json=rank_body(50))
                except httpx.TransportError:
                    statuses.append(-1)
                    continue
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.add(response.json()["version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(statuses) > 20, 30, "the load running")
    write_lr_bundle(models_dir / "lr", encoder, random_weights(encoder, seed=11), version="20260501.000000")
    reload = httpx.post(f"{server}/models/reload", headers=ADMIN, timeout=30)

    def both_workers_reloaded() -> bool:  # the other worker reloads on its next poll
        return {fresh_post(server, rank_body(3)).json()["version"] for _ in range(20)} == {"20260501.000000"}

    wait_until(both_workers_reloaded, 10, "the new version in both workers")
    stop.set()
    for thread in threads:
        thread.join()
    assert reload.status_code == 200, reload.text
    assert len(statuses) > 50 and set(statuses) == {200}
    assert versions == {"20260101.000000", "20260501.000000"}
    after = {fresh_post(server, rank_body(3)).json()["version"] for _ in range(20)}
    assert after == {"20260501.000000"}
