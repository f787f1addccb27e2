"""Reads from PostgreSQL while another session terminates the reader's connections (issue 16, case 4).

Two ways to hand out pooled connections are compared, in one run, on the same load: the service's
``Database`` (each connection checked with a round trip, a stale one replaced at once) and a plain
psycopg pool with its own ``check=ConnectionPool.check_connection`` (which pauses, with back-off,
between a failed check and the next try). One thread reads (``SELECT 1``) in a loop for ``--seconds``;
another calls ``pg_terminate_backend`` on every session of the reader's ``application_name`` every
``--kill-every`` seconds. Printed: reads, failed reads, reads per second, p50 / p99 / worst latency.

    .venv/bin/python bench/stale_connections_bench.py --out bench/results/stale_connections.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.db import Database  # noqa: E402

Read = Callable[[], object]


def terminator(url: str, name: str, every_s: float, stop: threading.Event) -> threading.Thread:
    """A thread that terminates the sessions named ``name`` every ``every_s`` seconds until ``stop``."""
    import psycopg

    def run() -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            while not stop.wait(every_s):
                connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (name,),
                )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def measure(read: Read, seconds: float) -> dict[str, Any]:
    """Read in a loop for ``seconds``: counts and latency quantiles (milliseconds)."""
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            read()
        except Exception:  # noqa: BLE001 - a failed read is what is counted
            failures += 1
        latencies.append(time.perf_counter() - started)
    ms = np.asarray(latencies) * 1000.0
    return {
        "reads": len(latencies),
        "failed": failures,
        "reads_per_s": len(latencies) / seconds,
        "p50_ms": float(np.quantile(ms, 0.5)),
        "p99_ms": float(np.quantile(ms, 0.99)),
        "worst_ms": float(ms.max()),
    }


def service_reader(url: str) -> tuple[Read, Callable[[], None]]:
    db = Database(url)
    return (lambda: db.query(lambda cursor: cursor.execute("SELECT 1").fetchone())), db.close


def pool_check_reader(url: str) -> tuple[Read, Callable[[], None]]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        url, min_size=1, max_size=8, open=True, timeout=10, check=ConnectionPool.check_connection
    )

    def read() -> object:
        with pool.connection() as connection:
            return connection.execute("SELECT 1").fetchone()

    return read, pool.close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--kill-every", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=Path("bench/results/stale_connections.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {"seconds": args.seconds, "kill_every_s": args.kill_every, "runs": {}}
    for label, make in (("service Database", service_reader), ("pool check=", pool_check_reader)):
        name = f"stale_bench_{label.split()[0]}"
        separator = "&" if "?" in args.url else "?"
        read, close = make(f"{args.url}{separator}application_name={name}")
        stop = threading.Event()
        killer = terminator(args.url, name, args.kill_every, stop)
        try:
            results["runs"][label] = measure(read, args.seconds)
        finally:
            stop.set()
            killer.join(5)
            close()
    table = Table(title=f"SELECT 1 while the reader's connections are terminated every {args.kill_every} s")
    for column in ("connections", "reads", "failed", "reads/s", "p50 ms", "p99 ms", "worst ms"):
        table.add_column(column, justify="right")
    for label, run in results["runs"].items():
        table.add_row(
            label,
            str(run["reads"]),
            str(run["failed"]),
            f"{run['reads_per_s']:.0f}",
            f"{run['p50_ms']:.2f}",
            f"{run['p99_ms']:.2f}",
            f"{run['worst_ms']:.0f}",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
