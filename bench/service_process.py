"""Start and stop a real ``apprank`` service process for benches: ``apprank serve``, as deployed.

``start_service`` runs the very command ``apprank run`` ends in (``python -m apprank serve``), so the
bench gets uvicorn exactly as a deployment does: the options of ``service.cli.uvicorn_options``
(httptools with the service's header limits and read timeouts, the event loop, no access log, the
keep-alive timeout) and the same worker and metrics-directory handling.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_service(
    settings: Mapping[str, str], workers: int = 1, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``apprank serve`` with ``workers`` processes and the given ``APPRANK_*`` settings, once /readyz
    answers 200; its output goes to ``log`` (None: inherited).

    Several workers get a fresh metrics directory, from ``apprank serve`` itself.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(settings)
    models = env.get("APPRANK_MODELS_DIR", "models")
    command = [sys.executable, "-m", "apprank", "serve", "--models", models, "--port", str(port)]
    command += ["--workers", str(workers)]
    if workers > 1:
        command += ["--metrics-dir", str(Path(env.get("TMPDIR", "/tmp")) / f"apprank-bench-metrics-{port}")]
    return start_process(command, env, port, log)


def start_process(
    command: Sequence[str], env: Mapping[str, str], port: int, log: Path | None = None, ready: str = "/readyz"
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``command`` (a server on ``port``) and wait until ``ready`` answers 200 (60 s at most)."""
    output = None if log is None else log.open("ab")
    server = subprocess.Popen(list(command), env=dict(env), cwd=REPO, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{command[:4]} exited with {server.returncode} (see {log})")
        try:
            with urllib.request.urlopen(f"{url}{ready}", timeout=1) as answer:
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
