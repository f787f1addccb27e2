"""Memory and database growth under large values the schema does not use (issue 16, case 6).

The real service (uvicorn on ``service.app:app_from_env``, one worker, SQLite event log, the tests' LR
bundle on the frappe_ctr schema) gets ``--requests`` POST /rank bodies of ten candidates, each with a
value of ``--value-mb`` MB under an unknown key in the user features and in a new app's features.
Printed and written: the worker's anonymous resident memory (RssAnon: heap, not mapped files) before
and after, and the size of the database files.

    .venv/bin/python bench/hostile_values_bench.py --out bench/results/hostile_values.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service_process import start_service, stop_service  # noqa: E402

from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle  # noqa: E402
from tests.service.conftest import rank_body  # noqa: E402


def rss_anon_mb(pid: int) -> float:
    """RssAnon of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no RssAnon for {pid}")


def hostile_body(k: int, value_mb: float) -> bytes:
    """A /rank body with ``value_mb`` MB under unknown keys (user features, a new app's features)."""
    half = int(value_mb * 1_000_000 / 4)  # hex doubles the bytes; two such values
    body = rank_body(10)
    body["user"] = {"junk": os.urandom(half).hex()}
    body["candidates"][0] = {"app_id": f"new{k}", "features": {"junk": os.urandom(half).hex()}}
    return orjson.dumps(body)


def run(requests: int, value_mb: float) -> dict[str, Any]:
    """Drive the service; the figures."""
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    encoder = fit_frappe_encoder()
    write_lr_bundle(root / "models" / "lr", encoder, random_weights(encoder))
    database = root / "bench.db"
    settings = {"APPRANK_MODELS_DIR": str(root / "models"), "APPRANK_DATABASE_URL": f"sqlite:///{database}"}
    server, url = start_service(settings)
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(5):
                client.post(f"{url}/rank", json=rank_body(10)).raise_for_status()
            before = rss_anon_mb(server.pid)
            sent = 0
            for k in range(requests):
                content = hostile_body(k, value_mb)
                sent += len(content)
                headers = {"content-type": "application/json"}
                client.post(f"{url}/rank", content=content, headers=headers).raise_for_status()
            time.sleep(2)  # the writer's last batch
            after = rss_anon_mb(server.pid)
    finally:
        stop_service(server)
    db_mb = sum(p.stat().st_size for p in root.glob("bench.db*")) / 2**20
    return {
        "requests": requests,
        "sent_mib": round(sent / 2**20, 1),
        "rss_anon_before_mib": round(before, 1),
        "rss_anon_after_mib": round(after, 1),
        "database_mib": round(db_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--value-mb", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = run(args.requests, args.value_mb)
    table = Table(title="large unknown-key values: worker memory and database")
    for name in figures:
        table.add_column(name)
    table.add_row(*(str(value) for value in figures.values()))
    Console().print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
