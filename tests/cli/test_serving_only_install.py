"""A serving-only install (the Docker image: no torch, pandas, pyarrow, sklearn, scipy): its CLI, and the
service with its web console and report chart (matplotlib is part of the serving install)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCK = """
import importlib.abc, sys
TRAINING = {"torch", "pandas", "pyarrow", "sklearn", "onnx", "onnxscript", "scipy", "gbstats", "playwright"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in TRAINING:
            raise ImportError(f"{name} is not installed")
        return None
sys.meta_path.insert(0, Block())
"""
BLOCKER = (
    BLOCK
    + """
sys.argv = ["apprank", *sys.argv[1:]]
from apprank.cli import main
main()
"""
)
# The service as the image runs it (app_from_env, event log attached), one experiment with events, and
# every console page, asset and chart fetched in-process through the ASGI interface (the serving install
# has no HTTP client library).
CONSOLE = (
    BLOCK
    + """
import asyncio, json, os, time
from service.app import app_from_env
from service.db import Database
from service.events.store import open_event_store

store = open_event_store(Database(os.environ["APPRANK_DATABASE_URL"]), "apprank_")
store.migrate()
day = int(time.time() // 86400) - 1
rows = []
for u in range(40):
    arm = ("control", "treatment")[u % 2]
    for k in range(3):
        common = (f"r{u}-{k}", "a", f"u{u}", day * 86400.0 + k, day, day * 86400.0 + k, "exp", arm)
        rows.append((f"i{u}-{k}", "impression", *common))
        if (u + k) % 4 == 0:
            rows.append((f"d{u}-{k}", "download", *common))
store.insert_events_unchecked(rows)
store.rebuild_user_days()

async def call(app, method, path, body=b"", headers=()):
    sent, pending = [], [{"type": "http.request", "body": body, "more_body": False}]
    async def receive():  # the body once, then a client that stays connected
        if pending:
            return pending.pop()
        await asyncio.Event().wait()
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"x"), *headers], "http_version": "1.1", "scheme": "http",
             "client": ("127.0.0.1", 1), "server": ("x", 80), "root_path": ""}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]).get(b"content-type", b"").decode(), content

async def main():
    app = app_from_env()
    async with app.router.lifespan_context(app):
        spec = {"arms": [{"name": "control", "model": "lr", "weight": 50},
                         {"name": "treatment", "model": "lr", "weight": 50}], "control": "control"}
        auth = [(b"authorization", b"Bearer s3cret"), (b"content-type", b"application/json")]
        status, _, _ = await call(app, "PUT", "/experiments/exp", json.dumps(spec).encode(), auth)
        assert status == 201, status
        for path in ["/ui", "/ui/experiments/exp", "/ui/models", "/ui/api/experiments",
                     "/ui/static/console.js", "/ui/static/console.css", "/experiments/exp/report",
                     "/experiments/exp/report.png", "/experiments/exp/report.svg"]:
            status, kind, content = await call(app, "GET", path)
            print(path, status, kind, len(content))

asyncio.run(main())
"""
)


def _apprank(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", BLOCKER, *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env={"PATH": ""})


def test_help_lists_the_serving_commands_without_training_extras() -> None:
    result = _apprank("--help")
    assert result.returncode == 0, result.stderr
    commands = set(re.findall(r"^│ (\S+)\s", result.stdout, flags=re.MULTILINE))
    assert {"serve", "report", "export-training", "purge-events"} <= commands
    assert "synth" not in commands  # needs pyarrow: left out rather than breaking --help


def test_train_says_which_extra_is_missing() -> None:
    result = _apprank("train", "--data", "x", "--out", "y")
    assert result.returncode == 2
    assert "training needs the `train` extra" in result.stderr


def test_the_console_and_the_report_chart_work_without_training_extras(tmp_path: Path) -> None:
    from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle

    encoder = fit_frappe_encoder()
    write_lr_bundle(tmp_path / "models" / "lr", encoder, random_weights(encoder, seed=1), version="1")
    env = {
        "PATH": "",
        "APPRANK_MODELS_DIR": str(tmp_path / "models"),
        "APPRANK_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "APPRANK_ADMIN_TOKEN": "s3cret",
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    command = [sys.executable, "-c", CONSOLE]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    answers = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert all(status == "200" for status, *_ in answers.values()), answers
    assert answers["/experiments/exp/report.png"][1] == "image/png"
    assert answers["/experiments/exp/report.svg"][1] == "image/svg+xml"
    assert answers["/ui"][1].startswith("text/html") and answers["/ui/static/console.js"][1].startswith(
        "text/javascript"
    )
