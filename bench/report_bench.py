"""Benchmark of the A/B report: a store holding ten million impressions, and the report's time.

The store (SQLite, or PostgreSQL with ``--postgres URL``) is built by bulk insert (events in time
order, so every index grows at its end), then the per-user-day counts are rebuilt from the events in
SQL, exactly what the store maintains at ingestion. The full report (``build_report``) is timed cold
(first on a fresh connection) and warm, and its peak RSS measured in a fresh process. The target on
the project's 2-core machine is under 5 s for 10 million impressions on SQLite.

    .venv/bin/python bench/report_bench.py --impressions 10000000 --compare --reuse

``--compare`` also times the previous read path (``report_windowed.py``: one SQL query with a window
function) interleaved with the current one in the same run, and checks that both give the same
report. ``--reuse`` keeps an existing database with the same parameters instead of rebuilding it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
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

from procstat import high_water_mib  # noqa: E402
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
PG_SCHEMA = "report_bench"
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
    if store.db.dialect == "postgresql":  # planner statistics now, not whenever autovacuum comes by
        with store.db.transaction() as cursor:
            cursor.execute("ANALYZE")
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


def open_bench_store(url: str) -> SqlEventStore:
    """A fresh connection to the bench database (SQLite: an empty page cache, a cold report)."""
    return open_event_store(Database(url))


def time_paths(url: str, names: list[str], runs: int) -> dict[str, dict[str, list[float]]]:
    """Per read path, the report's time cold (first on a fresh connection) and warm (the next one).

    The paths alternate within each run, so both see the same load on a shared machine.
    """
    kinds = ("cold", "warm", "cold_cpu", "warm_cpu")
    timings: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in kinds} for name in names}
    for run in range(runs):
        for name in names if run % 2 == 0 else names[::-1]:
            store = open_bench_store(url)
            for kind in ("cold", "warm"):
                started, cpu = time.perf_counter(), time.process_time()
                build_report(store, EXPERIMENT, read=PATHS[name])
                timings[name][kind].append(time.perf_counter() - started)
                timings[name][f"{kind}_cpu"].append(time.process_time() - cpu)
            store.db.close()
            log.info(
                "%s: cold %.2f s, warm %.2f s", name, timings[name]["cold"][-1], timings[name]["warm"][-1]
            )
    return timings


def same_report(url: str) -> bool:
    """Whether both read paths give the same report, every number of it (the bench's check)."""
    store = open_bench_store(url)
    now = datetime.now(UTC)
    new, old = (build_report(store, EXPERIMENT, now=now, read=PATHS[name]) for name in ("numpy", "windowed"))
    store.db.close()
    log.info("lifts: %s", {(lift.arm, lift.metric): lift.lift for lift in new.lifts})
    return new.model_dump() == old.model_dump()


def peak_rss_mib(url: str, name: str) -> dict[str, float]:
    """The peak RSS of a fresh process that opens the store and builds one report by ``name``'s path."""
    command = [sys.executable, __file__, "--peak-rss-of", name, "--url", url]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def report_peak_rss(url: str, name: str) -> None:
    """The child of ``peak_rss_mib``: prints its peak RSS before and after one report (MiB).

    VmHWM, not ``getrusage``: Linux carries ``ru_maxrss`` over ``exec`` from the forked parent.
    """
    store = open_bench_store(url)
    before = high_water_mib()
    build_report(store, EXPERIMENT, read=PATHS[name])
    print(json.dumps({"before_mib": before, "peak_mib": high_water_mib()}))  # noqa: T201 - for the parent


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
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help=f"build the store in schema {PG_SCHEMA} of this PostgreSQL database instead of SQLite",
    )
    parser.add_argument("--peak-rss-of", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)  # the store of a --peak-rss-of child
    return parser.parse_args()


def store_url(args: argparse.Namespace) -> str:
    """The bench store's URL: the SQLite file, or the PostgreSQL database with the bench's schema first."""
    if args.postgres is None:
        return f"sqlite:///{args.db}"
    separator = "&" if "?" in args.postgres else "?"
    return f"{args.postgres}{separator}options=-csearch_path%3D{PG_SCHEMA}"


def open_store(args: argparse.Namespace, params: dict[str, Any]) -> tuple[SqlEventStore, bool]:
    """The bench database: reused when ``--reuse`` and built with the same parameters, else fresh."""
    stamp = stamp_path(args)
    exists = args.postgres is not None or args.db.exists()
    reuse = args.reuse and exists and stamp.exists() and json.loads(stamp.read_text()) == params
    if not reuse:
        stamp.unlink(missing_ok=True)
        if args.postgres is None:
            for path in (args.db, Path(f"{args.db}-wal"), Path(f"{args.db}-shm")):
                path.unlink(missing_ok=True)
        else:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as connection:
                connection.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
                connection.execute(f"CREATE SCHEMA {PG_SCHEMA}")
    store = open_event_store(Database(store_url(args)))
    store.migrate()
    return store, reuse


def stamp_path(args: argparse.Namespace) -> Path:
    """Where the parameters of the built store are kept (what ``--reuse`` compares)."""
    stamp: Path = args.db.with_suffix(".params.json")
    return stamp if args.postgres is None else stamp.with_name("report_bench_postgres.params.json")


def show(
    sizes: dict[str, int], build: dict[str, float], paths: dict[str, dict[str, Any]], dialect: str
) -> None:
    title = (
        f"report over {sizes['impressions']:,} impressions, {sizes['downloads']:,} downloads, "
        f"{sizes['user_days']:,} user-days ({dialect}, target < 5 s); store build "
        + (f"{build['load_s'] + build['rebuild_user_days_s']:.1f} s" if build else "reused")
    )
    table = Table(title=title)
    columns = ["read path", "cold median (s)", "warm median (s)", "cold / warm range (s)"]
    for column in [*columns, "CPU cold / warm (s)", "peak RSS (MiB)"]:
        table.add_column(column, justify="right")
    for name, figures in paths.items():
        table.add_row(
            name,
            f"{figures['cold_median_s']:.2f}",
            f"{figures['warm_median_s']:.2f}",
            f"{min(figures['cold_s']):.1f}-{max(figures['cold_s']):.1f} / "
            f"{min(figures['warm_s']):.1f}-{max(figures['warm_s']):.1f}",
            f"{figures['cold_cpu_median_s']:.2f} / {figures['warm_cpu_median_s']:.2f}",
            f"{figures['peak_rss_mib']:.0f} (+{figures['peak_rss_mib'] - figures['rss_before_mib']:.0f})",
        )
    Console().print(table)


def path_figures(timings: dict[str, list[float]], rss: dict[str, float]) -> dict[str, Any]:
    """One path's figures: wall and CPU seconds (this process's: a PostgreSQL server's are not in it)."""
    medians = {f"{kind}_median_s": statistics.median(timings[kind]) for kind in ("cold", "warm")}
    medians |= {f"{kind}_median_s": statistics.median(timings[kind]) for kind in ("cold_cpu", "warm_cpu")}
    return {
        "cold_s": timings["cold"],
        "warm_s": timings["warm"],
        "cold_cpu_s": timings["cold_cpu"],
        "warm_cpu_s": timings["warm_cpu"],
        **medians,
        "peak_rss_mib": rss["peak_mib"],
        "rss_before_mib": rss["before_mib"],
    }


def main() -> None:
    args = parse_args()
    if args.peak_rss_of:
        report_peak_rss(args.url, args.peak_rss_of)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = {k: getattr(args, k) for k in ("impressions", "users", "days", "ctr", "lift", "seed")}
    store, reuse = open_store(args, params)
    build = {} if reuse else build_store(store, args)
    stamp_path(args).write_text(json.dumps(params))
    sizes = counts(store)
    store.db.close()
    names = ["numpy", "windowed"] if args.compare else ["numpy"]
    url = store_url(args)
    timings = time_paths(url, names, args.runs)
    paths = {name: path_figures(timings[name], peak_rss_mib(url, name)) for name in names}
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "params": params,
        "store": sizes | {"dialect": store_url(args).split(":")[0]} | build,
        "paths": paths,
        "target_s": 5.0,
    }
    if args.compare:
        result["same_report"] = same_report(url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    show(sizes, build, paths, url.split(":")[0])
    if args.compare:
        Console().print(f"both paths give the same report: {result['same_report']}")
    Console().print(f"written {args.out}")


if __name__ == "__main__":
    main()
