"""Encoder throughput: fit on frappe_ctr train, then encode 1,000,000 rows of the Frappe schema.

The rows are the real train split repeated to one million, as the reader returns them (unicode arrays),
and once more as Python objects (what JSON requests give the service). Prints a table, writes JSON.

    .venv/bin/python bench/encode_bench.py --out bench/results/encode.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from model.fitting import fit_encoder
from model.schema import FeatureSchema
from training.datasets import resolve_dataset
from training.readers.base import read_all

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("APPRANK_DATA_DIR", REPO.parent / "shared" / "data")) / "frappe_ctr"
console = Console()


def best_of(repeats: int, action: Any) -> float:
    """Fastest of ``repeats`` timings, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "encode.json")
    args = parser.parse_args()

    schema = FeatureSchema.load(REPO / "configs" / "schemas" / "frappe_ctr.yaml")
    started = time.perf_counter()
    train = read_all(resolve_dataset(DATA, schema).train)
    read_seconds = time.perf_counter() - started
    fit_seconds = best_of(1, lambda: fit_encoder(schema, train.columns))
    encoder = fit_encoder(schema, train.columns)
    repeat = -(-args.rows // train.num_rows)
    text = {name: np.tile(values, repeat)[: args.rows] for name, values in train.columns.items()}
    objects = {name: values.astype(object) for name, values in text.items()}
    text_seconds = best_of(args.repeats, lambda: encoder.transform(text, args.rows))
    object_seconds = best_of(args.repeats, lambda: encoder.transform(objects, args.rows))

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "fields": len(schema.fields),
        "rows": args.rows,
        "read_train_seconds": read_seconds,
        "train_rows": train.num_rows,
        "fit_seconds": fit_seconds,
        "encode_text_seconds": text_seconds,
        "encode_objects_seconds": object_seconds,
        "encode_text_rows_per_s": args.rows / text_seconds,
    }
    table = Table(title=f"encoder, Frappe schema ({len(schema.fields)} fields), {results['machine']}")
    table.add_column("step")
    table.add_column("rows", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("rows/s", justify="right")
    table.add_row(
        "read train.csv",
        f"{train.num_rows:,}",
        f"{read_seconds:.2f}",
        f"{train.num_rows / read_seconds:,.0f}",
    )
    table.add_row("fit", f"{train.num_rows:,}", f"{fit_seconds:.2f}", f"{train.num_rows / fit_seconds:,.0f}")
    table.add_row(
        "transform (reader arrays)",
        f"{args.rows:,}",
        f"{text_seconds:.2f}",
        f"{args.rows / text_seconds:,.0f}",
    )
    table.add_row(
        "transform (JSON objects)",
        f"{args.rows:,}",
        f"{object_seconds:.2f}",
        f"{args.rows / object_seconds:,.0f}",
    )
    console.print(table)
    console.print(f"target: 1,000,000 rows in under 5 s -> {text_seconds < 5.0 * args.rows / 1_000_000}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
