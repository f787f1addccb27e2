"""Benchmark of the retrain's export step alone: the event store's window into the prepared format.

The store is ``retrain_bench``'s (impressions in time order, ten per request, served lists with the
features a DeepFM-D scored), ``--impressions`` in all, under ``--root``. The serving encoder is fitted
on the first 100k rows; then the export runs as ``apprank retrain`` runs it (one read of the store
decoded a column at a time, the rows spilled, the vocabularies grown on the train split, the spill
encoded into the prepared dataset). Reported: the export's seconds and rows per second, and its peak
RSS (this process's ``VmHWM``, restarted just before the export), against the window's rows. The
``--row-path`` run measures the path this replaced for comparison: two reads of the store through
``labeled_rows`` (one object per row, every JSON text decoded per row).

    nice .venv/bin/python bench/export_bench.py --impressions 1000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from retrain_bench import SCHEMA, build_store  # noqa: E402

from model.schema import FeatureSchema  # noqa: E402
from pipeline.export import block_chunk, blocks, labeled_chunks  # noqa: E402
from pipeline.retrain_data import Source, training_rows, write_prepared  # noqa: E402
from pipeline.retrain_state import peak_rss_mib, release_memory, reset_peak_rss  # noqa: E402
from pipeline.retrain_warm import grow_encoder  # noqa: E402
from pipeline.row_spill import Spilled  # noqa: E402
from service.db import Database  # noqa: E402
from service.events.store import SqlEventStore, open_event_store  # noqa: E402
from training.config import load_config  # noqa: E402
from training.pipeline import fit_on  # noqa: E402
from training.readers.base import Chunk  # noqa: E402

log = logging.getLogger("export_bench")


class RowPath(Source):
    """The replaced path: ``labeled_rows`` (a ``LabeledRow`` per row) through ``block_chunk``."""

    def chunks(self, schema: FeatureSchema) -> Iterator[Chunk]:
        rows = self.store.labeled_rows(self.experiment, self.start_ts, self.end_ts)
        first = 1
        for block in blocks(rows, self.block_rows):
            yield block_chunk(block, schema, first)
            first += len(block)


def open_store(args: argparse.Namespace) -> SqlEventStore:
    """The bench store under ``--root``, built unless one of the same size is there."""
    stamp, db = args.root / "params.json", args.root / "events.db"
    params = {"impressions": args.impressions, "users": args.users, "days": args.days, "seed": args.seed}
    fresh = not (stamp.is_file() and json.loads(stamp.read_text()) == params)
    if fresh:
        args.root.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
    store = open_event_store(Database(f"sqlite:///{db}"))
    if fresh:
        store.migrate()
        build_store(store, argparse.Namespace(ctr=0.05, lift=0.05, **params))
        stamp.write_text(json.dumps(params))
    return store


def export(store: SqlEventStore, args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(None, [], model="deepfm")
    window = (float("-inf"), float("inf"))
    first_rows = labeled_chunks(store, "bench", *window, SCHEMA, 50_000)
    serving = fit_on(SCHEMA, itertools.islice(first_rows, 2))
    release_memory()
    measured = reset_peak_rss()
    started = time.perf_counter()
    if args.row_path:
        source: Source | Spilled = RowPath(store, "bench", *window)
    else:
        source = Spilled(Source(store, "bench", *window), args.root / "rows.spill")
    grown = grow_encoder(serving, training_rows(source, SCHEMA, config))
    written = write_prepared(source, grown, config, args.root / "prepared")
    seconds = time.perf_counter() - started
    if isinstance(source, Spilled):
        source.remove()
    return {
        "rows": written.rows,
        "seconds": seconds,
        "rows_per_s": written.rows / seconds,
        "peak_rss_mib": peak_rss_mib() if measured else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impressions", type=int, default=1_000_000, help="the window (the whole store)")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--row-path", action="store_true", help="measure the replaced two-read path")
    parser.add_argument("--root", type=Path, default=Path("/tmp/export_bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "export_bench.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pipeline.retrain_data").setLevel(logging.WARNING)
    store = open_store(args)
    load_before = os.getloadavg()
    result = export(store, args) | {
        "path": "row objects, two store reads" if args.row_path else "columns, one store read + spill",
        "impressions": args.impressions,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
