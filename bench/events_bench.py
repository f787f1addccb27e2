"""Benchmark of the event log in the real service (uvicorn processes), SQLite store.

1. Ingestion: POST /events with batches of 100 events (impressions and downloads of served lists that
   are already in the store), from concurrent clients; accepted events per second and request latency.
   Target on the project's 2-core machine: at least 20,000 events per second.
2. Served-list logging: p50 / p99 of POST /rank at one connection (wrk) with the event log's writer as
   the ServedListSink, through the writer process (the default) and through the previous writer
   thread (``APPRANK_EVENT_WRITER=thread``), against the same service with served lists discarded
   (``NullSink``); the difference of the p50s is what logging adds to /rank. Target: at most 0.3 ms.

The service is ``service.app:app_from_env`` under uvicorn (what ``apprank serve`` runs), with the event
log attached (``APPRANK_EVENT_LOG=true``) or not, over an LR bundle on the frappe_ctr schema (the
tests' fixture bundle: no data files needed).

    .venv/bin/python bench/events_bench.py --out bench/results/events_bench.json

Needs ``wrk`` for part 2 (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service_process import start_service, stop_service  # noqa: E402

from service.rank.served import ServedList  # noqa: E402

log = logging.getLogger("events_bench")
ITEMS = 10  # returned items per pre-logged served list; a batch of 100 events covers 10 lists
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()
done = function(summary, latency, requests)
  local out = io.open("{out}", "w")
  out:write(string.format('{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}}',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
  out:close()
end
"""


def start_server(
    work: Path, logging_on: bool, writer: str = "process"
) -> tuple[subprocess.Popen[bytes], str]:
    """One uvicorn worker on ``service.app:app_from_env``, what ``apprank serve`` runs; process and URL.

    ``writer``: the served-list writer (``APPRANK_EVENT_WRITER``: ``process``, the default, or
    ``thread``, the previous in-process writer)."""
    settings = {
        "APPRANK_MODELS_DIR": str(work / "models"),
        "APPRANK_DATABASE_URL": f"sqlite:///{work}/bench.db",
        "APPRANK_EVENT_LOG": "true" if logging_on else "false",
        "APPRANK_EVENT_WRITER": writer,
        "APPRANK_ORT_DEVICE": "cpu",
    }
    return start_service(settings)


def write_fixture_bundle(work: Path) -> None:
    from tests.service.bundles import fit_frappe_encoder, random_weights, write_lr_bundle

    encoder = fit_frappe_encoder()
    write_lr_bundle(work / "models" / "lr", encoder, random_weights(encoder), version="20260101.000000")


def prelog_served_lists(work: Path, lists: int) -> None:
    """Served lists r0.. of user u<r % 1000>, items a0..a9, written straight into the store."""
    from service.db import Database
    from service.events.store import open_event_store

    db = Database(f"sqlite:///{work}/bench.db")
    store = open_event_store(db)
    store.migrate()
    now = time.time()
    ctr = np.linspace(0.2, 0.1, ITEMS).astype(np.float32)
    order = np.arange(ITEMS, dtype=np.int64)
    app_ids = [f"a{i}" for i in range(ITEMS)]
    features = [{"cost": "free"}] * ITEMS
    for start in range(0, lists, 5_000):
        batch = [
            ServedList(
                f"r{r}", now, "default", "control", 0, "lr", "20260101.000000", "ctr", f"u{r % 1000}", {},
                {"daytime": "morning"}, app_ids, None, features, order, ctr,
            )
            for r in range(start, min(lists, start + 5_000))
        ]  # fmt: skip
        store.write_served(batch)
    db.close()


def event_bodies(batches: int) -> list[bytes]:
    """Batch b: impressions of the 10 items of lists 10b..10b+9, one in ten also downloaded (100 events)."""
    bodies = []
    for b in range(batches):
        events = []
        for r in range(b * 10, b * 10 + 10):
            for i in range(ITEMS - 1):
                events.append(
                    {
                        "event_id": f"i{r}-{i}",
                        "type": "impression",
                        "request_id": f"r{r}",
                        "app_id": f"a{i}",
                        "user_id": f"u{r % 1000}",
                    }
                )
            events.append(
                {
                    "event_id": f"d{r}",
                    "type": "download",
                    "request_id": f"r{r}",
                    "app_id": "a0",
                    "user_id": f"u{r % 1000}",
                }
            )
        bodies.append(orjson.dumps({"events": events}))
    return bodies


async def post_all(url: str, bodies: list[bytes], connections: int) -> dict[str, Any]:
    """Post every body over ``connections`` concurrent keep-alive connections; counts and latencies."""
    import httpx

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    accepted = failed = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal accepted, failed
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await client.post(
                    "/events", content=body, headers={"content-type": "application/json"}
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    accepted += response.json()["accepted"]
                else:
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {
        "events_per_s": accepted / elapsed,
        "accepted": accepted,
        "failed_requests": failed,
        "seconds": elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
    }


def ingestion(work: Path, batches: int, connections: int) -> dict[str, Any]:
    prelog_served_lists(work, batches * 10 + 100)
    server, url = start_server(work, logging_on=True)
    try:
        bodies = event_bodies(batches + 20)
        asyncio.run(post_all(url, bodies[batches:], connections))  # warm-up on lists the run does not use
        result = asyncio.run(post_all(url, bodies[:batches], connections))
    finally:
        stop_service(server)
    return result | {"batch_size": 100, "connections": connections, "batches": batches}


def rank_body(candidates: int, top_k: int | None) -> bytes:
    from tests.service.bundles import CONTEXT_VALUES, item_features

    body: dict[str, Any] = {
        "user_id": "3",
        "context": {name: values[0] for name, values in CONTEXT_VALUES.items()},
        "candidates": [{"app_id": f"a{i}", "features": item_features(i)} for i in range(candidates)],
    }
    if top_k is not None:
        body["top_k"] = top_k
    return orjson.dumps(body)


def wrk_rank(url: str, body: Path, work: Path, seconds: int) -> dict[str, float]:
    """wrk at one connection on POST /rank; latencies in ms."""
    out = work / f"wrk-{time.monotonic_ns()}.json"
    script = work / f"rank-{time.monotonic_ns()}.lua"
    script.write_text(WRK_LUA.format(body=body, out=out))
    subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", str(script), f"{url}/rank"],
        check=True,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1e3,
        "p99_ms": result["p99_us"] / 1e3,
        "errors": result["errors"],
    }


def rank_overhead(work: Path, seconds: int, shapes: list[tuple[int, int | None]]) -> list[dict[str, Any]]:
    """/rank latency without served-list logging, and with it through either writer (thread, process),
    for (candidates, top_k) shapes."""
    bodies = {}
    for n, k in shapes:
        bodies[(n, k)] = work / f"rank-{n}-{k}.json"
        bodies[(n, k)].write_bytes(rank_body(n, k))
    figures: dict[tuple[int, int | None, str], dict[str, float]] = {}
    for mode in ("off", "thread", "process"):
        server, url = start_server(work, mode != "off", "thread" if mode == "off" else mode)
        try:
            for shape, body in bodies.items():
                wrk_rank(url, body, work, 2)  # warm-up
                figures[(*shape, mode)] = wrk_rank(url, body, work, seconds)
        finally:
            stop_service(server)
    rows = []
    for n, k in shapes:
        off, thread, on = (figures[(n, k, mode)] for mode in ("off", "thread", "process"))
        rows.append(
            {
                "candidates": n,
                "top_k": k or n,
                "off": off,
                "thread": thread,
                "on": on,
                "added_p50_ms": on["p50_ms"] - off["p50_ms"],
                "thread_added_p50_ms": thread["p50_ms"] - off["p50_ms"],
            }
        )
    return rows


def show(ingest: dict[str, Any] | None, rank: list[dict[str, Any]]) -> None:
    console = Console()
    if ingest is not None:
        table = Table(title="POST /events, batches of 100, SQLite (target >= 20,000 events/s)")
        for column in ("connections", "events/s", "p50 (ms)", "p99 (ms)", "failed"):
            table.add_column(column, justify="right")
        table.add_row(
            str(ingest["connections"]), f"{ingest['events_per_s']:,.0f}", f"{ingest['p50_ms']:.2f}",
            f"{ingest['p99_ms']:.2f}", str(ingest["failed_requests"]),
        )  # fmt: skip
        console.print(table)
    table = Table(title="/rank at 1 connection: served-list logging off, thread writer, process writer")
    columns = ["candidates", "top_k", "off p50", "thread p50", "process p50", "process added p50"]
    columns += ["off p99", "thread p99", "process p99", "off req/s", "thread req/s", "process req/s"]
    for column in columns:
        table.add_column(column + (" (ms)" if " p" in column else ""), justify="right")
    for row in rank:
        off, thread, on = row["off"], row["thread"], row["on"]
        table.add_row(
            str(row["candidates"]), str(row["top_k"]), f"{off['p50_ms']:.3f}", f"{thread['p50_ms']:.3f}",
            f"{on['p50_ms']:.3f}", f"{row['added_p50_ms']:+.3f}", f"{off['p99_ms']:.3f}",
            f"{thread['p99_ms']:.3f}", f"{on['p99_ms']:.3f}", f"{off['rps']:,.0f}", f"{thread['rps']:,.0f}",
            f"{on['rps']:,.0f}",
        )  # fmt: skip
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=2_000, help="POST /events requests of 100 events")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per /rank measurement")
    parser.add_argument("--skip-ingestion", action="store_true")
    parser.add_argument("--skip-rank", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "events_bench.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="events-bench-"))
    try:
        write_fixture_bundle(work)
        ingest = None if args.skip_ingestion else ingestion(work, args.batches, args.connections)
        rank = [] if args.skip_rank else rank_overhead(work, args.seconds, [(100, 10), (100, None)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "ingestion": ingest, "rank": rank}, indent=2) + "\n")
    show(ingest, rank)
    Console().print(f"written {args.out}")


if __name__ == "__main__":
    main()
