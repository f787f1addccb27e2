"""Start and stop a real ``apprank`` service process (uvicorn on ``service.app:app_from_env``) for benches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_service(settings: Mapping[str, str], workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn with ``workers`` processes and the given ``APPRANK_*`` settings, once /readyz answers 200.

    Several workers get a fresh ``PROMETHEUS_MULTIPROC_DIR``, as ``apprank serve`` gives them.
    """
    port = free_port()
    env = dict(os.environ, **settings)
    if workers > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"apprank-metrics-{port}-")
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the service did not become ready within 60 s")


def stop_service(server: subprocess.Popen[bytes]) -> None:
    """Stop gracefully (SIGTERM) and wait."""
    server.terminate()
    server.wait(timeout=30)
