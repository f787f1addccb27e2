"""A real Prometheus for tests: scrapes given targets, evaluates deploy/prometheus's rules, answers queries.

    with PrometheusServer(tmp_path, targets=["127.0.0.1:8000"]) as prometheus:
        prometheus.wait_for_scrapes(3)
        value = prometheus.wait_for_value('experiment_arm:apprank_ctr:ratio{arm="lr"}', 0.05)

The binary is Debian's `prometheus` (apt-get install prometheus); everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.deploy.promql import RULE_FILES


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrometheusServer:
    """A Prometheus process with a temporary config, storage and the repository's rule files.

    Args:
        workdir: an empty directory for the config, the rules and the TSDB.
        targets: ``host:port`` of the services to scrape (job ``apprank``, path /metrics).
        interval_s: scrape and rule evaluation interval.
        rule_files: rule files to copy in (default: deploy/prometheus/rules/*).
        binary: the prometheus executable.
    """

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        *,
        interval_s: float = 1.0,
        rule_files: Sequence[Path] = RULE_FILES,
        binary: str = "prometheus",
    ) -> None:
        self.workdir = workdir
        self.targets = list(targets)
        self.interval_s = interval_s
        self.rule_files = list(rule_files)
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = workdir / "prometheus.log"

    def _write_config(self) -> Path:
        rules_dir = self.workdir / "rules"
        rules_dir.mkdir(parents=True, exist_ok=True)
        for rule_file in self.rule_files:
            shutil.copy(rule_file, rules_dir / rule_file.name)
        interval = f"{int(self.interval_s * 1000)}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,
            },
            "rule_files": [f"rules/{rule_file.name}" for rule_file in self.rule_files],
            "scrape_configs": [{"job_name": "apprank", "static_configs": [{"targets": self.targets}]}],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def start(self, timeout_s: float = 30.0) -> None:
        config = self._write_config()
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self._wait(lambda: self._get("/-/ready") is not None, timeout_s, "Prometheus to be ready")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def log(self) -> str:
        return self._log.read_text(encoding="utf-8", errors="replace") if self._log.exists() else ""

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body: bytes = response.read()
                return body
        except OSError:
            return None

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._process.returncode}:\n{self.log()}")
            if condition():
                return
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout_s} s for {what}\n{self.log()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now (``[{"metric": {...}, "value": [ts, "1.5"]}, ...]``)."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None:
            raise RuntimeError(f"query {expr!r} failed\n{self.log()}")
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r}: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def values(self, expr: str, label: str) -> dict[str, float]:
        """``expr``'s current values keyed by one label."""
        return {row["metric"].get(label, ""): float(row["value"][1]) for row in self.query(expr)}

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its ``health`` (``ok`` once evaluated without error) and ``lastError``."""
        body = self._get("/api/v1/rules")
        if body is None:
            raise RuntimeError(f"GET /api/v1/rules failed\n{self.log()}")
        groups: list[dict[str, Any]] = json.loads(body)["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def wait_for_scrapes(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until every target has been scraped successfully ``count`` times."""
        expr = f'count_over_time(up{{job="apprank"}}[1h]) >= {count} and up{{job="apprank"}} == 1'
        self._wait(lambda: len(self.query(expr)) == len(self.targets), timeout_s, f"{count} scrapes")

    def wait_for_series(self, expr: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns ``count`` series; return them."""
        self._wait(lambda: len(self.query(expr)) == count, timeout_s, f"{count} series of {expr}")
        return self.query(expr)

    def wait_for_value(
        self, expr: str, expected: float, *, rel: float = 1e-9, timeout_s: float = 60.0
    ) -> float:
        """Wait until ``expr`` returns one sample equal to ``expected`` (relative tolerance); return it."""
        seen: list[float] = []

        def matches() -> bool:
            result = self.query(expr)
            if len(result) != 1:
                return False
            value = float(result[0]["value"][1])
            seen.append(value)
            return math.isclose(value, expected, rel_tol=rel)

        try:
            self._wait(matches, timeout_s, f"{expr} == {expected}")
        except TimeoutError as error:
            raise AssertionError(f"{expr}: expected {expected}, last values {seen[-5:]}") from error
        return seen[-1]
