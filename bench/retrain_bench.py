"""Benchmark of ``apprank retrain`` end to end over a logged window of ten million impressions.

The event store (a SQLite file under ``--root``, /tmp by default) is filled by bulk insert: the events
come from ``report_bench.event_rows`` (impressions in time order, ten per request, downloads at a 5%
CTR), and each request gets its served list with the raw features a DeepFM-D scored (user from the
user_id, hour and network of the request, the app with its category and rating). The serving DeepFM-D
version is trained on the log's first day (the day before the window, at most ``--serving-rows`` rows,
one epoch, ``--precision``); then ``apprank retrain`` runs over the next ``--days - 1`` days
(``--window-impressions`` in all, the last day held out) as a child process with the shipped defaults
(the training configuration is the serving version's own). Reported: each step's time (from the
retrain's summary JSON), the wall time, and the peak RSS of the whole run, polled from the child's own
``VmHWM`` in ``/proc/<pid>/status`` (and its children's), not ``ru_maxrss``, which Linux carries over
``exec`` from the forked parent. Target: under 2 GB.

    flock /tmp/bench.lock nice .venv/bin/python bench/retrain_bench.py --window-impressions 10000000

The labels carry no signal beyond the arm (``event_rows`` draws them from the CTR alone), so the AUCs
are near 0.5: this measures the loop's scale, not a model's quality; the gate runs with margins wide
enough to let such a candidate through so the publish step is timed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from procstat import high_water_mib  # noqa: E402
from report_bench import CHUNK, DAY, ITEMS_PER_LIST, event_rows  # noqa: E402

from model.schema import FeatureSchema  # noqa: E402
from service.db import Database  # noqa: E402
from service.events.store import SqlEventStore, open_event_store  # noqa: E402
from service.rank.served import ServedList  # noqa: E402

log = logging.getLogger("retrain_bench")
EXPERIMENT = "bench"
MODEL = "deepfm"
NETWORKS = ("wifi", "4g", "3g")
CATEGORIES = tuple(f"c{k}" for k in range(8))
SCHEMA = FeatureSchema.model_validate(
    {
        "name": "retrain_bench",
        "label": "label",
        "user_id_field": "user",
        "item_id_field": "app",
        "fields": [
            {"name": "user", "kind": "categorical", "source": "user"},
            {"name": "hour", "kind": "categorical", "source": "context"},
            {"name": "network", "kind": "categorical", "source": "context"},
            {"name": "app", "kind": "categorical", "source": "item"},
            {"name": "category", "kind": "categorical", "source": "item"},
            {"name": "rating", "kind": "numeric", "source": "item", "transform": "standardize"},
        ],
    }
)
# Wide margins: the bench's labels carry no signal (see the module docstring); the minimums stay.
GATE = {"max_auc_drop": 0.05, "max_logloss_increase": 0.05, "max_calibration_error": 0.2}


def served_lists(events: list[tuple[Any, ...]]) -> Iterator[ServedList]:
    """The served list of every request of ``events`` (``event_rows`` order: a request's ten
    impressions are consecutive), with the features the model scored."""
    impressions = [e for e in events if e[1] == "impression"]
    for first in range(0, len(impressions), ITEMS_PER_LIST):
        group = impressions[first : first + ITEMS_PER_LIST]
        request, ts, user, arm = group[0][2], group[0][5], group[0][4], group[0][9]
        number = int(request[1:])
        apps = [e[3] for e in group]
        yield ServedList(
            request_id=request, ts=ts, experiment=EXPERIMENT, arm=arm, bucket=number % 100, model=MODEL,
            version="bench", objective="ctr", user_id=user, user={},
            context={"hour": str(int(ts % DAY // 3600)), "network": NETWORKS[number % 3]},
            app_ids=apps, bids=None,
            features=[
                {"category": CATEGORIES[int(a[1:]) % 8], "rating": 3.0 + int(a[1:]) % 5 * 0.4} for a in apps
            ],
            order=np.arange(len(apps), dtype=np.int64), ctr=np.full(len(apps), 0.05, dtype=np.float32),
        )  # fmt: skip


def build_store(store: SqlEventStore, args: argparse.Namespace) -> float:
    """Bulk-load events and served lists chunk by chunk (a chunk is whole requests); seconds taken."""
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for start in range(0, args.impressions, CHUNK):
        count = min(CHUNK, args.impressions - start)
        events = list(event_rows(start, count, args, rng))
        store.insert_events_unchecked(events)
        lists = list(served_lists(events))
        for part in range(0, len(lists), 10_000):
            store.write_served(lists[part : part + 10_000])
        log.info("loaded %d / %d impressions", start + count, args.impressions)
    return time.perf_counter() - started


def train_serving(store: SqlEventStore, args: argparse.Namespace) -> float:
    """A DeepFM-D trained on the log's first day (the day before the window) as the serving version."""
    from pipeline.export import export_training
    from training.config import load_config
    from training.pipeline import train_bundle

    started = time.perf_counter()
    first_day = int(time.time() // DAY) - args.days
    day_file = args.root / "first_day.parquet"
    export_training(store, EXPERIMENT, first_day * DAY, (first_day + 1) * DAY, day_file, SCHEMA)
    sets = ["epochs=1", f"max_rows={args.serving_rows}", f"prepared_cache={args.root / 'cache'}"]
    sets += [f"precision={args.precision}"]
    config = load_config(None, sets, model=MODEL)
    shutil.rmtree(args.root / "models", ignore_errors=True)
    train_bundle(day_file, args.root / "models" / MODEL, config, schema=SCHEMA)
    day_file.unlink()
    return time.perf_counter() - started


def vm_hwm_mib(pid: int) -> float | None:
    """``VmHWM`` of a running process (None once it is gone)."""
    try:
        return high_water_mib(pid)
    except (OSError, RuntimeError):
        return None


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except OSError:
        return []


def run_retrain(args: argparse.Namespace) -> dict[str, Any]:
    """``apprank retrain`` as a child process; its summary, wall time and peak RSS (VmHWM, polled)."""
    summary = args.root / "summary.json"
    summary.unlink(missing_ok=True)
    shutil.rmtree(args.root / "models" / ".retrain", ignore_errors=True)
    config = args.root / "retrain.yaml"
    config.write_text(json.dumps({"days": args.days - 1, "gate": GATE}))
    command = [
        sys.executable, "-m", "apprank", "retrain", "--experiment", EXPERIMENT, "--model", MODEL,
        "--models", str(args.root / "models"), "--db", f"sqlite:///{args.db}", "--config", str(config),
        "--summary", str(summary),
    ]  # fmt: skip
    peaks: dict[str, float] = {"main": 0.0, "children": 0.0}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    while process.poll() is None:
        main = vm_hwm_mib(process.pid)
        if main is not None:
            peaks["main"] = max(peaks["main"], main)
        for child in children(process.pid):
            peaks["children"] = max(peaks["children"], vm_hwm_mib(child) or 0.0)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    reader.join(10)
    if process.returncode != 0 or not summary.is_file():
        sys.stdout.write("".join(output[-60:]))
        raise SystemExit(f"apprank retrain exited with {process.returncode}")
    return {"summary": json.loads(summary.read_text()), "wall_s": wall, "peak_rss_mib": peaks}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--window-impressions", type=int, default=10_000_000, help="in the retrain's window (days - 1 days)"
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=8, help="days logged: the serving day, then the window")
    parser.add_argument("--ctr", type=float, default=0.05)
    parser.add_argument("--lift", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--serving-rows", type=int, default=300_000)
    parser.add_argument(
        "--precision",
        default="fp32",
        help="the serving version's training precision, which the retrain keeps (bf16 is the shipped "
        "default; on a CPU without AVX512-BF16 it trains 2.7x slower than fp32)",
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/retrain_bench"))
    parser.add_argument("--reuse", action="store_true", help="keep a store built with the same parameters")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrain_bench.json")
    return parser.parse_args()


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """The store and the serving version, rebuilt unless ``--reuse`` finds them built alike."""
    params = {k: getattr(args, k) for k in ("impressions", "users", "days", "ctr", "lift", "seed")}
    params |= {"serving_rows": args.serving_rows, "precision": args.precision, "day": int(time.time() // DAY)}
    stamp = args.root / "params.json"
    if args.reuse and stamp.is_file() and json.loads(stamp.read_text()) == params:
        log.info("reusing the store and the serving version in %s", args.root)
        built: dict[str, Any] = json.loads((args.root / "build.json").read_text())
        return built
    shutil.rmtree(args.root, ignore_errors=True)
    args.root.mkdir(parents=True)
    database = Database(f"sqlite:///{args.db}")
    store = open_event_store(database)
    store.migrate()
    build = {"store_s": build_store(store, args), "serving_s": train_serving(store, args)}
    database.close()
    build["store_bytes"] = sum(p.stat().st_size for p in args.root.glob("events.db*"))
    (args.root / "build.json").write_text(json.dumps(build))
    stamp.write_text(json.dumps(params))
    return build


def show(result: dict[str, Any]) -> None:
    summary = result["summary"]
    exported = summary["exported"]
    title = (
        f"apprank retrain over {exported['train']['rows']:,} training + {exported['holdout']['rows']:,} "
        f"held-out impressions (SQLite): {result['wall_s']:.0f} s, peak RSS "
        f"{result['peak_rss_mib']['main']:,.0f} MiB (target < 2,048)"
    )
    table = Table(title=title)
    for column in ("step", "seconds", "share", "peak RSS MiB (during the step)"):
        table.add_column(column, justify="right")
    total = sum(summary["seconds"].values())
    peaks = summary.get("peak_rss_mib", {})
    for step, seconds in summary["seconds"].items():
        peak = f"{peaks[step]:,.0f}" if step in peaks else "-"
        table.add_row(step, f"{seconds:,.1f}", f"{seconds / total:.0%}", peak)
    table.add_row("process (wall)", f"{result['wall_s']:,.1f}", "", f"{result['peak_rss_mib']['main']:,.0f}")
    Console().print(table)
    candidate, serving = summary["candidate_metrics"], summary["serving_metrics"] or {}
    Console().print(
        f"outcome {summary['outcome']}; held-out AUC candidate {candidate.get('auc', float('nan')):.4f} "
        f"serving {serving.get('auc', float('nan')):.4f}; growth {summary['vocabulary_growth']}"
    )


def main() -> None:
    args = parse_args()
    args.db = args.root / "events.db"
    # the whole log: the serving day, then the window (event_rows spreads impressions evenly over days)
    per_day = -(-args.window_impressions // (args.days - 1) // ITEMS_PER_LIST) * ITEMS_PER_LIST
    args.impressions = per_day * args.days
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build = prepare(args)
    load_before = os.getloadavg()
    result = run_retrain(args)
    result |= {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "params": {
            k: getattr(args, k)
            for k in (
                "impressions",
                "window_impressions",
                "users",
                "days",
                "seed",
                "serving_rows",
                "precision",
            )
        },
        "build": build,
        "target_peak_rss_mib": 2048,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    show(result)
    Console().print(f"written {args.out}")


if __name__ == "__main__":
    main()
