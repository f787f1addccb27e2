"""Fixtures of the deploy tests: the Prometheus tools (Debian package `prometheus`) and a live server."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import require
from tests.deploy.prometheus_harness import PrometheusServer

INSTALL_HINT = "apt-get install -y prometheus (or `make tools`)"


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, f"promtool: {INSTALL_HINT}")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    require(path is not None, f"the prometheus server: {INSTALL_HINT}")
    assert path is not None
    return path


StartPrometheus = Callable[[Sequence[str]], PrometheusServer]


@pytest.fixture
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[StartPrometheus]:
    """Starts a real Prometheus scraping the given ``host:port`` targets every 0.5 s with the repo's rules.

    Every server started is stopped at the end of the test.
    """
    servers: list[PrometheusServer] = []

    def start(targets: Sequence[str]) -> PrometheusServer:
        server = PrometheusServer(
            tmp_path / f"prometheus-{len(servers)}", targets, interval_s=0.5, binary=prometheus_binary
        )
        servers.append(server)
        server.workdir.mkdir(parents=True)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
