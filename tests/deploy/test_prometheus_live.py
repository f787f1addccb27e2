"""A real Prometheus scrapes the running service while traffic flows; its per-arm CTR recording rule
matches the event store's report (issue 5, "A real Prometheus")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require
from tests.deploy.conftest import StartPrometheus
from tests.deploy.prometheus_harness import free_port
from tests.deploy.promql import REPO

pytestmark = pytest.mark.slow

EXPERIMENT = "live"
USERS = 80
TOP_K = 5


def write_models(root: Path) -> None:
    bundles = pytest.importorskip("tests.service.bundles", reason="test bundles need onnx (train extra)")
    encoder = bundles.fit_frappe_encoder()
    bundles.write_lr_bundle(root / "lr", encoder, bundles.random_weights(encoder, seed=1), name="lr")
    bundles.write_lr_bundle(root / "lr2", encoder, bundles.random_weights(encoder, seed=2), name="lr2")


def experiments_file(path: Path) -> Path:
    arms = [
        {"name": "control", "model": "lr", "weight": 50},
        {"name": "treatment", "model": "lr2", "weight": 50},
    ]
    path.write_text(json.dumps([{"name": EXPERIMENT, "arms": arms, "control": "control"}]))
    return path


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the service was not ready in {timeout_s} s:\n{log.read_text()}")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """The service under uvicorn, in multiprocess metrics mode, with a 50/50 experiment; its base URL."""
    write_models(tmp_path / "models")
    (tmp_path / "metrics").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "APPRANK_MODELS_DIR": str(tmp_path / "models"),
        "APPRANK_DATABASE_URL": f"sqlite:///{tmp_path / 'apprank.db'}",
        "APPRANK_EXPERIMENTS_FILE": str(experiments_file(tmp_path / "experiments.json")),
        "APPRANK_DEFAULT_EXPERIMENT": EXPERIMENT,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rank_body(user: int) -> dict[str, Any]:
    bundles = pytest.importorskip("tests.service.bundles")
    return {
        "user_id": f"u{user}",
        "experiment": EXPERIMENT,
        "context": {"daytime": "morning", "weekday": "monday", "country": "Spain"},
        "candidates": [{"app_id": f"a{i}", "features": bundles.item_features(i)} for i in range(20)],
        "top_k": TOP_K,
    }


def drive_traffic(client: httpx.Client) -> None:
    """Every user ranks once, sees the top 5, and downloads by a fixed rule that favours treatment."""
    for user in range(USERS):
        ranked = client.post("/rank", json=rank_body(user))
        assert ranked.status_code == 200, ranked.text
        answer = ranked.json()
        events = []
        for item in answer["items"]:
            base = {"request_id": answer["request_id"], "app_id": item["app_id"], "user_id": f"u{user}"}
            events.append(
                {**base, "event_id": f"{answer['request_id']}-{item['app_id']}-i", "type": "impression"}
            )
            modulus = 3 if answer["arm"] == "treatment" else 5
            if (user + item["position"]) % modulus == 0:
                events.append(
                    {**base, "event_id": f"{answer['request_id']}-{item['app_id']}-d", "type": "download"}
                )
        posted = client.post("/events", json={"events": events})
        assert posted.status_code == 200 and posted.json()["accepted"] == len(events), posted.text


def test_per_arm_ctr_recording_rule_matches_the_event_store_report(
    service: str, start_prometheus: StartPrometheus
) -> None:
    prometheus = start_prometheus([service.removeprefix("http://")])
    prometheus.wait_for_scrapes(2)
    with httpx.Client(base_url=service, timeout=10) as client:
        drive_traffic(client)
        report = client.get(f"/experiments/{EXPERIMENT}/report")
    assert report.status_code == 200, report.text
    arms = {arm["arm"]: arm for arm in report.json()["arms"]}
    assert set(arms) == {"control", "treatment"}
    require(all(arm["impressions"] > 0 for arm in arms.values()), "traffic in both arms")
    for name, arm in arms.items():
        selector = f'{{experiment="{EXPERIMENT}",arm="{name}"}}'
        prometheus.wait_for_value(f"experiment_arm:apprank_impressions:sum{selector}", arm["impressions"])
        prometheus.wait_for_value(f"experiment_arm:apprank_downloads:sum{selector}", arm["downloads"])
        prometheus.wait_for_value(f"experiment_arm:apprank_ctr:ratio{selector}", arm["ctr"])
    ctr = prometheus.values(f'experiment_arm:apprank_ctr:ratio{{experiment="{EXPERIMENT}"}}', "arm")
    assert ctr["treatment"] > ctr["control"]  # the download rule favours treatment
    # The served traffic is visible per arm too, and every rule evaluates against the real series.
    served = prometheus.wait_for_series(
        f'experiment_arm:apprank_rank_requests:rate5m{{experiment="{EXPERIMENT}"}}', 2
    )
    assert {row["metric"]["arm"] for row in served} == {"control", "treatment"}
    assert {
        rule["name"]: rule.get("lastError") for rule in prometheus.rules() if rule["health"] == "err"
    } == {}
