"""Benchmark of the A/B report on SQLite: a store holding ten million impressions, and the report's time.

The store is built by bulk insert (events in time order, so every index grows at its end), then the
per-user-day counts are rebuilt from the events in SQL, exactly what the store maintains at ingestion.
The report (``build_report``: per-arm user sums in SQL, the statistics in Python) is timed cold and
warm. The target on the project's 2-core machine is under 5 s for 10 million impressions.

    .venv/bin/python bench/report_bench.py --impressions 10000000 --out bench/results/report_bench.json

``--reuse`` keeps an existing database with the same parameters instead of rebuilding it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.db import Database  # noqa: E402
from service.events.store import SqlEventStore, open_event_store  # noqa: E402
from service.report.build import ExperimentArms, build_report  # noqa: E402

log = logging.getLogger("report_bench")
DAY = 86400
ITEMS_PER_LIST = 10
CHUNK = 1_000_000


def event_rows(
    start: int, count: int, args: argparse.Namespace, rng: np.random.Generator
) -> Iterator[tuple[Any, ...]]:
    """Impressions number start..start+count (in time order) and their downloads, as event rows."""
    first_day = int(time.time() // DAY) - args.days
    span = args.days * DAY
    ts = first_day * DAY + (np.arange(start, start + count) + rng.random(count)) * (span / args.impressions)
    users = rng.integers(0, args.users, count)
    treated = (users * 2654435761 % 1000) < 500  # a stable 50/50 split by user
    ctr = np.where(treated, args.ctr * (1 + args.lift), args.ctr)
    downloaded = rng.random(count) < ctr
    for k, (t, user, arm, down) in enumerate(
        zip(ts.tolist(), users.tolist(), treated.tolist(), downloaded.tolist(), strict=True)
    ):
        number = start + k
        request, app, day = f"r{number // ITEMS_PER_LIST:09d}", f"a{number % ITEMS_PER_LIST}", int(t // DAY)
        common = (request, app, f"u{user}", t, day, t, "bench", "treatment" if arm else "control")
        yield (f"i{number:010d}", "impression", *common)
        if down:
            yield (f"d{number:010d}", "download", *common)


def build_store(store: SqlEventStore, args: argparse.Namespace) -> dict[str, float]:
    """Bulk-load the events chunk by chunk, then rebuild the per-user-day counts."""
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for start in range(0, args.impressions, CHUNK):
        count = min(CHUNK, args.impressions - start)
        store.insert_events_unchecked(list(event_rows(start, count, args, rng)))
        log.info("loaded %d / %d impressions", start + count, args.impressions)
    loaded = time.perf_counter()
    store.rebuild_user_days()
    rebuilt = time.perf_counter()
    return {"load_s": loaded - started, "rebuild_user_days_s": rebuilt - loaded}


def counts(store: SqlEventStore) -> dict[str, int]:
    with store.db.read() as cursor:
        cursor.execute(f"SELECT type, COUNT(*) FROM {store.prefix}events GROUP BY type")
        by_type = dict(cursor.fetchall())
        cursor.execute(f"SELECT COUNT(*) FROM {store.prefix}event_user_days")
        user_days = cursor.fetchone()[0]
    return {
        "impressions": by_type.get("impression", 0),
        "downloads": by_type.get("download", 0),
        "user_days": user_days,
    }


def time_reports(store: SqlEventStore, runs: int) -> list[float]:
    experiment = ExperimentArms("bench", {"control": 50.0, "treatment": 50.0}, "control")
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        report = build_report(store, experiment)
        timings.append(time.perf_counter() - started)
    log.info(
        "report: %d arms, %d days, SRM flagged %s", len(report.arms), len(report.daily), report.srm.flagged
    )
    lifts = {(lift.arm, lift.metric): lift.lift for lift in report.lifts}
    log.info("lifts: %s", lifts)
    return timings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impressions", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--ctr", type=float, default=0.05)
    parser.add_argument("--lift", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", type=Path, default=REPO / "var" / "bench" / "report_bench.db")
    parser.add_argument(
        "--reuse", action="store_true", help="keep an existing database built with these parameters"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "report_bench.json")
    return parser.parse_args()


def open_store(args: argparse.Namespace, params: dict[str, Any]) -> tuple[SqlEventStore, bool]:
    """The bench database: reused when ``--reuse`` and built with the same parameters, else fresh."""
    stamp = args.db.with_suffix(".params.json")
    reuse = args.reuse and args.db.exists() and stamp.exists() and json.loads(stamp.read_text()) == params
    if not reuse:
        for path in (args.db, Path(f"{args.db}-wal"), Path(f"{args.db}-shm"), stamp):
            path.unlink(missing_ok=True)
    store = open_event_store(Database(f"sqlite:///{args.db}"))
    store.migrate()
    return store, reuse


def show(sizes: dict[str, int], build: dict[str, float], timings: list[float]) -> None:
    table = Table(title=f"report over {sizes['impressions']:,} impressions (SQLite, target < 5 s)")
    for column in (
        "impressions",
        "downloads",
        "user-days",
        "build (s)",
        "report first (s)",
        "report median (s)",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{sizes['impressions']:,}",
        f"{sizes['downloads']:,}",
        f"{sizes['user_days']:,}",
        f"{build['load_s'] + build['rebuild_user_days_s']:.1f}" if build else "reused",
        f"{timings[0]:.2f}",
        f"{statistics.median(timings):.2f}",
    )
    Console().print(table)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = {k: getattr(args, k) for k in ("impressions", "users", "days", "ctr", "lift", "seed")}
    store, reuse = open_store(args, params)
    build = {} if reuse else build_store(store, args)
    args.db.with_suffix(".params.json").write_text(json.dumps(params))
    sizes = counts(store)
    timings = time_reports(store, args.runs)
    store.db.close()
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
    }
    result = {
        "machine": machine,
        "params": params,
        "store": sizes | {"file_mib": args.db.stat().st_size / 2**20} | build,
        "report_s": {"first": timings[0], "median": statistics.median(timings), "all": timings},
        "target_s": 5.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    show(sizes, build, timings)
    Console().print(f"written {args.out}")


if __name__ == "__main__":
    main()
