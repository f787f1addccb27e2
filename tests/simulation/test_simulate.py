"""The simulated A/B test end to end: a real uvicorn server (``apprank serve``, 2 workers) over tiny
LR and DeepFM-D bundles, ``apprank simulate`` against it, and the report it prints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from apprank.bootstrap import EXPERIMENT, BootstrapResult
from apprank.cli import build_app
from simulation.storefront import Storefront, load_world
from tests.conftest import REPO, require

pytestmark = pytest.mark.slow
USERS, DAYS, LIST_SIZE = 20, 2, 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def server(tiny_store: BootstrapResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``apprank serve`` on a free port with the tiny bundles, the seeded experiment and a fresh SQLite."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = dict(
        os.environ,
        APPRANK_DATABASE_URL=f"sqlite:///{root / 'events.db'}",
        APPRANK_EXPERIMENTS_FILE=str(tiny_store.config.experiments_file),
        APPRANK_ADMIN_TOKEN="test-token",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "apprank", "serve", "--models", str(tiny_store.config.models_dir)]
    command += ["--port", str(port), "--workers", "2", "--metrics-dir", str(root / "metrics")]
    process = subprocess.Popen(command, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        require(_wait_ready(url, process, 90), f"an apprank server on {url}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_storefront_bodies_equal_the_worlds_request_dict(tiny_store: BootstrapResult) -> None:
    store = Storefront(load_world(tiny_store.world_file))
    context = {"hour": "19", "weekday": "fri", "network": "4g"}
    apps = np.array([3, 0, 17], dtype=np.int64)
    body = store.body(5, context, apps, top_k=2)
    assert body == store.world.request_dict(5, context, apps) | {"top_k": 2}
    candidates = store.candidates(30, np.random.default_rng(0), exclude={1, 2, 3})
    assert candidates.size == 30 and len(set(candidates.tolist())) == 30
    assert not {1, 2, 3} & set(candidates.tolist())


def test_simulation_posts_every_event_and_the_report_has_both_arms(
    server: str, tiny_store: BootstrapResult, tmp_path: Path
) -> None:
    figures_file, lists_png, report_png = (
        tmp_path / "figures.json",
        tmp_path / "lists.png",
        tmp_path / "daily.png",
    )
    arguments = ["simulate", "--url", server, "--world", str(tiny_store.world_file), "--users", str(USERS)]
    arguments += ["--days", str(DAYS), "--visit-share", "1", "--views", "1", "--candidates", "30"]
    arguments += ["--list-size", str(LIST_SIZE), "--concurrency", "4", "--out", str(figures_file)]
    arguments += ["--png", str(report_png), "--lists-png", str(lists_png)]
    outcome = CliRunner().invoke(build_app(), arguments, env={"COLUMNS": "200"})
    assert outcome.exit_code == 0, outcome.output
    figures = json.loads(figures_file.read_text())
    report = figures["report"]
    impressions = USERS * DAYS * 1 * LIST_SIZE  # every user visits every day, one page view each
    assert figures["page_views"] == USERS * DAYS
    daily = figures["client_daily"]
    assert [sum(row["page_views"] for row in daily if row["day"] == d) for d in range(DAYS)] == [USERS] * DAYS
    assert sum(arm["impressions"] for arm in report["arms"]) == impressions
    downloads = sum(arm["downloads"] for arm in report["arms"])
    assert figures["events"]["accepted"] == impressions + downloads and figures["events"]["rejected"] == {}
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert set(arms) == {"lr", "deepfm"} and all(arm["users"] > 0 for arm in arms.values())
    assert sum(arm["users"] for arm in arms.values()) == USERS
    assert report["experiment"] == EXPERIMENT and report["srm"]["p_value"] is not None
    expected_days = DAYS if figures["event_time"] == "simulated" else 1
    assert len(report["daily"]) in (expected_days, expected_days + 1)  # a run may straddle midnight
    assert {(row["arm"], row["k"]) for row in figures["list_metrics"]} == {
        (arm, k) for arm in ("lr", "deepfm") for k in (5, 10, 20)
    }
    for png in (lists_png, report_png):
        assert png.read_bytes().startswith(b"\x89PNG")
    for text in ("lift over lr", "SRM check", "personalization", "POST /events"):
        assert text in outcome.output
