"""Benchmark of served-list logging: what handing a served list over costs the worker, old vs new.

For N = 10, 100 and 1,000 returned items (frappe-shaped raw features, every candidate returned), each
writer of ``service.events`` gets the same lists, in one run, on a fresh SQLite file:

* ``thread`` (the old one, ``ServedListWriter``): /rank queues the ``ServedList``; a thread of the
  worker builds the rows and stores them, under the worker's GIL.
* ``process`` (the new one, ``ProcessWriter``): /rank encodes a msgpack record into a byte ring; a
  writer process stores it.

Figures per writer and N:

* ``submit_us``: median and p99 of one ``submit`` call on the request thread (what /rank waits for).
* ``worker_cpu_us``: CPU time of the worker process (every thread of it, so the GIL-holding work the old
  writer thread does counts; the writer process does not) per list, from the first submit until every
  list is stored. This is the cost logging puts on the process that serves /rank.
* ``lists_per_s``: the writer's throughput into SQLite (lists submitted at full speed, until stored).

    nice .venv/bin/python bench/logging_bench.py --out bench/results/logging_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.events.counters import EventCounters  # noqa: E402
from service.events.log import EventLog, EventLogConfig  # noqa: E402
from service.rank.served import LoggedFields, ServedList  # noqa: E402
from tests.service.bundles import item_features  # noqa: E402

SIZES = (10, 100, 1_000)
ITEMS_PER_RUN = 200_000  # returned items per (writer, N): 20,000 lists of 10 ... 200 lists of 1,000


def served_lists(n: int, count: int, fields: LoggedFields) -> list[ServedList]:
    """``count`` lists of ``n`` candidates (apps drawn from 5,000), all returned, best first."""
    rng = np.random.default_rng(n)
    lists = []
    for r in range(count):
        apps = rng.choice(5_000, size=n, replace=False)
        ctr = rng.random(n, dtype=np.float32)
        lists.append(
            ServedList(
                request_id=f"{n}-{r}",
                ts=time.time(),
                experiment="default",
                arm="control",
                bucket=r % 100,
                model="lr",
                version="20260101.000000",
                objective="ctr",
                user_id=f"u{r % 1000}",
                user={},
                context={"daytime": "morning", "weekday": "monday", "country": "Spain"},
                app_ids=[f"a{app}" for app in apps],
                bids=None,
                features=[item_features(int(app)) for app in apps],
                order=np.argsort(-ctr, kind="stable").astype(np.int64),
                ctr=ctr,
                fields=fields,
            )
        )
    return lists


def measure(writer: str, lists: list[ServedList], work: Path) -> dict[str, Any]:
    config = EventLogConfig(
        writer=writer,  # type: ignore[arg-type]
        served_log_bytes=512 * 1024 * 1024,
        served_queue_size=10**7,
        served_queue_candidates=10**9,
    )
    log = EventLog.open(
        f"sqlite:///{work}/{writer}-{len(lists[0].app_ids)}.db", config, counters=EventCounters()
    )
    log.start()
    try:
        log.writer.submit(lists[0])  # warm up: the writer connected, the statements prepared
        assert log.writer.flush(60)
        calls = np.empty(len(lists) - 1)
        cpu, wall = time.process_time(), time.perf_counter()
        for k, served in enumerate(lists[1:]):
            started = time.perf_counter()
            log.writer.submit(served)
            calls[k] = time.perf_counter() - started
        assert log.writer.flush(600), "the writer did not catch up"
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert log.writer.dropped == 0
    finally:
        log.close()
    count = len(lists) - 1
    return {
        "writer": writer,
        "items": len(lists[0].app_ids),
        "lists": count,
        "submit_p50_us": float(np.median(calls) * 1e6),
        "submit_p99_us": float(np.percentile(calls, 99) * 1e6),
        "worker_cpu_us": cpu / count * 1e6,
        "lists_per_s": count / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "logging_bench.json")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the default list counts")
    args = parser.parse_args()
    fields = LoggedFields(
        frozenset(), frozenset({"daytime", "weekday", "country"}), frozenset(item_features(0))
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            lists = served_lists(n, max(20, int(ITEMS_PER_RUN / n * args.scale)), fields)
            for writer in ("thread", "process"):
                results.append(measure(writer, lists, Path(tmp)))
    table = Table(title="served-list hand-off (SQLite, all N items returned)")
    for column in ("N", "writer", "submit p50 µs", "submit p99 µs", "worker CPU µs/list", "lists/s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            str(r["items"]),
            r["writer"],
            f"{r['submit_p50_us']:.1f}",
            f"{r['submit_p99_us']:.1f}",
            f"{r['worker_cpu_us']:.1f}",
            f"{r['lists_per_s']:,.0f}",
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
