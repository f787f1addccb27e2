"""The recording rules in a real Prometheus, against a stand-in exporter whose counters the test sets.

Also the self-test of the PrometheusServer harness that the live service test builds on.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.conftest import StartPrometheus
from tests.deploy.promql import load_rules

pytestmark = pytest.mark.slow


class Exporter:
    """Serves ``/metrics`` in the text exposition format from a dict the test changes."""

    def __init__(self) -> None:
        self.samples: dict[str, float] = {}
        self.lock = threading.Lock()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with exporter.lock:
                    body = "".join(f"{name} {value}\n" for name, value in exporter.samples.items()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"

    def set(self, **values: float) -> None:
        with self.lock:
            self.samples.update({_series(key): value for key, value in values.items()})


def _series(key: str) -> str:
    """``impressions__lr`` -> ``apprank_impressions_total{experiment="launch",arm="lr"}``."""
    metric, arm = key.split("__")
    suffix = "_total" if metric in {"impressions", "downloads"} else ""
    name = "apprank_experiment_users" if metric == "users" else f"apprank_{metric}{suffix}"
    return f'{name}{{experiment="launch",arm="{arm}"}}'


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exporter = Exporter()
    exporter.set(impressions__lr=0, downloads__lr=0, impressions__deepfm=0, downloads__deepfm=0)
    thread = threading.Thread(target=exporter.server.serve_forever, daemon=True)
    thread.start()
    yield exporter
    exporter.server.shutdown()
    exporter.server.server_close()


def test_per_arm_ctr_and_cvr_through_a_real_prometheus(
    start_prometheus: StartPrometheus, exporter: Exporter
) -> None:
    prometheus = start_prometheus([exporter.target])
    prometheus.wait_for_scrapes(2)
    exporter.set(
        impressions__lr=1000, downloads__lr=50, users__lr=200,
        impressions__deepfm=800, downloads__deepfm=64, users__deepfm=160,
    )  # fmt: skip
    assert prometheus.wait_for_value('experiment_arm:apprank_ctr:ratio{arm="lr"}', 0.05) == pytest.approx(
        0.05
    )
    prometheus.wait_for_value('experiment_arm:apprank_ctr:ratio{arm="deepfm"}', 0.08)
    prometheus.wait_for_value('experiment_arm:apprank_cvr:ratio{arm="deepfm"}', 0.4)
    # Both counters were scraped at 0 before the traffic, so the windowed rates share one extrapolation.
    prometheus.wait_for_value('experiment_arm:apprank_ctr:ratio_rate5m{arm="lr"}', 0.05, rel=1e-6)
    prometheus.wait_for_value('experiment_arm:apprank_downloads:increase5m{arm="deepfm"}', 64, rel=0.2)


def test_every_rule_evaluates_without_error(start_prometheus: StartPrometheus, exporter: Exporter) -> None:
    prometheus = start_prometheus([exporter.target])
    prometheus.wait_for_scrapes(3)
    rules = prometheus.rules()
    expected = load_rules()
    assert len(rules) == len(expected.recording) + len(expected.alerts)
    assert {rule["name"]: rule.get("lastError", "") for rule in rules if rule["health"] != "ok"} == {}
