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
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from report_windowed import read_arm_days_windowed  # noqa: E402

from service.db import Database  # noqa: E402
from service.events.store import SqlEventStore, open_event_store  # noqa: E402
from service.report.build import ArmDayReader, ExperimentArms, build_report  # noqa: E402
from service.report.sums import read_arm_days  # noqa: E402

log = logging.getLogger("report_bench")
DAY = 86400
ITEMS_PER_LIST = 10
CHUNK = 1_000_000
EXPERIMENT = ExperimentArms("bench", {"control": 50.0, "treatment": 50.0}, "control")
PATHS: dict[str, ArmDayReader] = {"numpy": read_arm_days, "windowed": read_arm_days_windowed}


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


def open_bench_store(db: Path) -> SqlEventStore:
    """A fresh connection to the bench database (an empty SQLite page cache: a cold report)."""
    return open_event_store(Database(f"sqlite:///{db}"))


def time_paths(db: Path, names: list[str], runs: int) -> dict[str, dict[str, list[float]]]:
    """Per read path, the report's time cold (first on a fresh connection) and warm (the next one).

    The paths alternate within each run, so both see the same load on a shared machine.
    """
    timings: dict[str, dict[str, list[float]]] = {name: {"cold": [], "warm": []} for name in names}
    for run in range(runs):
        for name in names if run % 2 == 0 else names[::-1]:
            store = open_bench_store(db)
            for kind in ("cold", "warm"):
                started = time.perf_counter()
                build_report(store, EXPERIMENT, read=PATHS[name])
                timings[name][kind].append(time.perf_counter() - started)
            store.db.close()
            log.info(
                "%s: cold %.2f s, warm %.2f s", name, timings[name]["cold"][-1], timings[name]["warm"][-1]
            )
    return timings


def same_report(db: Path) -> bool:
    """Whether both read paths give the same report, every number of it (the bench's check)."""
    store = open_bench_store(db)
    now = datetime.now(UTC)
    new, old = (build_report(store, EXPERIMENT, now=now, read=PATHS[name]) for name in ("numpy", "windowed"))
    store.db.close()
    log.info("lifts: %s", {(lift.arm, lift.metric): lift.lift for lift in new.lifts})
    return new.model_dump() == old.model_dump()


def peak_rss_mib(db: Path, name: str) -> dict[str, float]:
    """The peak RSS of a fresh process that opens the store and builds one report by ``name``'s path."""
    command = [sys.executable, __file__, "--db", str(db), "--peak-rss-of", name]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def report_peak_rss(db: Path, name: str) -> None:
    """The child of ``peak_rss_mib``: prints the peak RSS before and after one report (MiB)."""
    store = open_bench_store(db)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    build_report(store, EXPERIMENT, read=PATHS[name])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mib": before, "peak_mib": after}))  # noqa: T201 - read by the parent


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
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also time the previous read path (the windowed SQL query), interleaved, and check equality",
    )
    parser.add_argument("--peak-rss-of", choices=sorted(PATHS), help=argparse.SUPPRESS)
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


def show(sizes: dict[str, int], build: dict[str, float], paths: dict[str, dict[str, Any]]) -> None:
    title = (
        f"report over {sizes['impressions']:,} impressions, {sizes['downloads']:,} downloads, "
        f"{sizes['user_days']:,} user-days (SQLite, target < 5 s); store build "
        + (f"{build['load_s'] + build['rebuild_user_days_s']:.1f} s" if build else "reused")
    )
    table = Table(title=title)
    for column in (
        "read path",
        "cold median (s)",
        "warm median (s)",
        "all cold / warm (s)",
        "peak RSS (MiB)",
    ):
        table.add_column(column, justify="right")
    for name, figures in paths.items():
        table.add_row(
            name,
            f"{figures['cold_median_s']:.2f}",
            f"{figures['warm_median_s']:.2f}",
            " ".join(f"{c:.1f}/{w:.1f}" for c, w in zip(figures["cold_s"], figures["warm_s"], strict=True)),
            f"{figures['peak_rss_mib']:.0f} (+{figures['peak_rss_mib'] - figures['rss_before_mib']:.0f})",
        )
    Console().print(table)


def path_figures(timings: dict[str, list[float]], rss: dict[str, float]) -> dict[str, Any]:
    return {
        "cold_s": timings["cold"],
        "warm_s": timings["warm"],
        "cold_median_s": statistics.median(timings["cold"]),
        "warm_median_s": statistics.median(timings["warm"]),
        "peak_rss_mib": rss["peak_mib"],
        "rss_before_mib": rss["before_mib"],
    }


def main() -> None:
    args = parse_args()
    if args.peak_rss_of:
        report_peak_rss(args.db, args.peak_rss_of)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = {k: getattr(args, k) for k in ("impressions", "users", "days", "ctr", "lift", "seed")}
    store, reuse = open_store(args, params)
    build = {} if reuse else build_store(store, args)
    args.db.with_suffix(".params.json").write_text(json.dumps(params))
    sizes = counts(store)
    store.db.close()
    names = ["numpy", "windowed"] if args.compare else ["numpy"]
    timings = time_paths(args.db, names, args.runs)
    paths = {name: path_figures(timings[name], peak_rss_mib(args.db, name)) for name in names}
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "params": params,
        "store": sizes | {"file_mib": args.db.stat().st_size / 2**20} | build,
        "paths": paths,
        "target_s": 5.0,
    }
    if args.compare:
        result["same_report"] = same_report(args.db)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    show(sizes, build, paths)
    if args.compare:
        Console().print(f"both paths give the same report: {result['same_report']}")
    Console().print(f"written {args.out}")


if __name__ == "__main__":
    main()
