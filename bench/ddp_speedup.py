"""Data-parallel speed-up of DeepFM-D on frappe_ctr: ``apprank train --nproc 1`` vs ``--nproc 2`` on CPU.

The same global batch (4096) either way: one process with 2 torch threads, or two processes (gloo,
torchrun) with 1 thread each, each taking half of every batch while DistributedDataParallel averages
the gradients. Throughput is the training loop's samples per second (rank 0's clock over the global
rows of an epoch); the test AUC of each run must agree within noise. ``--lr-scaling sqrt`` adds a
2-process run with the learning rate multiplied by sqrt(2) (the paper's "4GPU-A" rule).

    .venv/bin/python bench/ddp_speedup.py                      # to early stopping (at most 30 epochs)
    .venv/bin/python bench/ddp_speedup.py --lr-scaling none sqrt --repeats 2
    .venv/bin/python bench/ddp_speedup.py --quick              # 30,000 rows, 2 epochs
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from experiments_common import FRAPPE, Run, add_run_options, machine, markdown_table, run_many, write_json
from rich.console import Console
from rich.table import Table

console = Console()
QUICK_SETS = ("max_rows=30000", "epochs=2", "hidden_units=[64,64]")


def configurations(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    """(label, processes, threads per process, lr scaling) of each measured setting."""
    cores = os.cpu_count() or 2
    configs = [("1 process", 1, cores, "none")]
    for scaling in args.lr_scaling:
        label = f"{args.nproc} processes" + (", lr x sqrt(N)" if scaling == "sqrt" else "")
        configs.append((label, args.nproc, max(1, cores // args.nproc), scaling))
    return configs


def plan(args: argparse.Namespace, root: Path) -> list[tuple[str, Run]]:
    """Every configuration ``repeats`` times, interleaved so that background load hits them alike."""
    runs = []
    for repeat in range(args.repeats):
        for label, nproc, threads, scaling in configurations(args):
            sets = [f"epochs={args.epochs}", f"threads={threads}", f"lr_scaling={scaling}", *args.set]
            sets += list(QUICK_SETS) if args.quick else []
            out = root / "bundles" / f"n{nproc}_{scaling}_r{repeat}"
            runs.append((label, Run("deepfm", FRAPPE, out, tuple(sets), nproc=nproc)))
    return runs


def summarise(runs: list[tuple[str, Run]], outcomes: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Per configuration: the best throughput over repeats, and the test figures of every repeat."""
    rows: dict[str, dict[str, Any]] = {}
    for (label, run), metrics in zip(runs, outcomes, strict=True):
        if metrics is None:
            continue
        row = rows.setdefault(label, {"setting": label, "nproc": run.nproc, "runs": []})
        training = metrics["training"]
        row["runs"].append(
            {"samples_per_s": training["train_samples_per_s"], "test_auc": metrics["test"]["auc"],
             "test_logloss": metrics["test"]["logloss"], "epochs": int(training["epochs"]),
             "train_seconds": training["train_seconds"]}
        )  # fmt: skip
    out = list(rows.values())
    for row in out:
        row["samples_per_s"] = max(r["samples_per_s"] for r in row["runs"])
        row["test_auc"] = sum(r["test_auc"] for r in row["runs"]) / len(row["runs"])
    if out and out[0]["nproc"] == 1:
        for row in out:
            row["speedup"] = row["samples_per_s"] / out[0]["samples_per_s"]
            row["auc_difference"] = row["test_auc"] - out[0]["test_auc"]
    return out


def show(rows: list[dict[str, Any]], tolerance: float) -> str:
    """Print the table and the AUC agreement; return the markdown table."""
    headers = ["setting", "samples/s", "speed-up", "test AUC", "AUC - 1 process", "epochs"]
    table = Table(title="DeepFM-D data-parallel training on frappe_ctr (CPU, gloo)")
    for column in headers:
        table.add_column(column, justify="left" if column == "setting" else "right")
    lines = []
    for row in rows:
        epochs = "/".join(str(r["epochs"]) for r in row["runs"])
        speedup, difference = row.get("speedup", math.nan), row.get("auc_difference", math.nan)
        line = [row["setting"], f"{row['samples_per_s']:,.0f}", f"x{speedup:.2f}",
                f"{row['test_auc']:.4f}", f"{difference:+.4f}", epochs]  # fmt: skip
        table.add_row(*line)
        lines.append(line)
    console.print(table)
    for row in rows[1:]:
        agree = abs(row.get("auc_difference", math.inf)) <= tolerance
        verdict = "[green]within[/green]" if agree else "[red]outside[/red]"
        console.print(f"{row['setting']}: test AUC {verdict} ±{tolerance} of the single process")
    return markdown_table(headers, lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel runs")
    parser.add_argument("--lr-scaling", nargs="+", default=["none"], choices=["none", "sqrt"])
    parser.add_argument("--epochs", type=int, default=30, help="at most this many (early stopping on)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting, interleaved")
    parser.add_argument("--tolerance", type=float, default=0.003, help="AUC agreement asked for")
    add_run_options(parser, quick="30,000 rows, 2 epochs, [64,64]")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = args.out_dir / ("ddp_speedup-quick" if args.quick else "ddp_speedup")
    host, started = machine(), time.perf_counter()
    runs = plan(args, root)
    outcomes = run_many([run for _, run in runs], resume=not args.no_resume, console=console)
    rows = summarise(runs, outcomes)
    markdown = show(rows, args.tolerance)
    elapsed = time.perf_counter() - started
    write_json(
        root / "ddp_speedup.json",
        {"machine": host, "elapsed_seconds": elapsed, "settings": vars(args), "results": rows},
    )
    (root / "ddp_speedup.md").write_text(markdown)
    console.print(f"{elapsed / 60:.1f} min; wrote {root}/ddp_speedup.md, ddp_speedup.json")
    if None in outcomes:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
