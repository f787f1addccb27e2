"""Training time of every registered model relative to LR's, on CPU (the DeepFM paper's efficiency figure).

Standalone (the default): every model trains a fixed number of epochs on frappe_ctr at the same batch
size (4096) with early stopping off, one ``apprank train`` process at a time; the time per epoch is the
training loop's own (``metrics.json``: ``train_seconds / epochs``, without reading, encoding,
validation or export), the median of the epochs after the first (which pays for warm-up), read from the
run's log lines. FNN is reported twice: its own epochs, and with its FM pre-training included
(an FM epoch per FNN epoch). With ``--repeats N`` every model is timed N times, in rotated order, and
the fastest repeat is kept (the least disturbed by other work on the machine).

With ``--from-table4 FILE`` the per-epoch times of an existing Table IV run are used instead (the mean
over its seeds); nothing is trained.

    .venv/bin/python bench/efficiency.py                      # 3 epochs per model
    .venv/bin/python bench/efficiency.py --from-table4 bench/results/table4/table4.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from experiments_common import (
    FRAPPE,
    MODELS,
    Run,
    add_run_options,
    machine,
    markdown_table,
    mean_std,
    pyplot,
    run_many,
    write_json,
)
from rich.console import Console
from rich.table import Table

console = Console()
FNN_WITH_PRETRAINING = "fnn (with FM pre-training)"
EPOCH_LINE = re.compile(r"epoch (\d+): .*\| [0-9.]+ s, ([0-9]+) rows/s")


def plan(args: argparse.Namespace, root: Path) -> list[Run]:
    """``repeats`` rounds over the models, each round starting one model later."""
    sets = [f"epochs={args.epochs}", "early_stopping.patience=1000", "calibrate=false"]
    sets += [f"threads={args.threads}", *args.set]
    if args.quick:
        sets.append("max_rows=20000")
    runs = []
    for repeat in range(args.repeats):
        order = args.models[repeat % len(args.models) :] + args.models[: repeat % len(args.models)]
        for model in order:
            runs.append(Run(model, FRAPPE, root / "bundles" / f"r{repeat}" / model, tuple(sets)))
    return runs


def epoch_seconds(run: Run, metrics: dict[str, Any]) -> float:
    """Median time of the epochs after the first (warm-up), from the run's log lines
    (``epoch N: ... | 0.3 s, 673420 rows/s``: the rate, unlike the rounded seconds, is precise even
    for LR's sub-second epochs); the mean over all epochs when there is only one."""
    text = run.log.read_text() if run.log.is_file() else ""
    training = metrics["training"]
    epochs = int(training["epochs"])
    # FNN's log starts with its FM pre-training's epochs: the run's own are the last ones
    rates = [float(m.group(2)) for m in EPOCH_LINE.finditer(text)][-epochs:]
    if len(rates) >= 2:
        return float(training["train_rows"] / statistics.median(rates[1:]))
    return float(training["train_seconds"] / epochs)


def measure(args: argparse.Namespace, root: Path) -> dict[str, dict[str, float]]:
    """Per model: the fastest repeat's seconds per epoch and samples per second."""
    runs = plan(args, root)
    outcomes = run_many(runs, resume=not args.no_resume, console=console)
    best: dict[str, dict[str, float]] = {}
    for run, metrics in zip(runs, outcomes, strict=True):
        if metrics is None:
            continue
        per_epoch = epoch_seconds(run, metrics)
        if run.model not in best or per_epoch < best[run.model]["seconds_per_epoch"]:
            rows = metrics["training"]["train_rows"]
            best[run.model] = {"seconds_per_epoch": per_epoch, "samples_per_s": rows / per_epoch}
    return best


def from_table4(path: Path, dataset: str) -> dict[str, dict[str, float]]:
    """Per model: the mean over seeds of the per-epoch time recorded by a Table IV run."""
    summary = json.loads(path.read_text())["results"][dataset]
    out: dict[str, dict[str, float]] = {}
    for model, figures in summary.items():
        seeds = figures["seeds"].values()
        per_epoch = mean_std([s["train_seconds"] / s["epochs"] for s in seeds])[0]
        out[model] = {"seconds_per_epoch": per_epoch}
    return out


def relative(times: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Add ``relative_to_lr`` to every model, and the FNN row that includes its FM pre-training."""
    if "lr" not in times:
        raise SystemExit("LR must be among the models: every time is relative to LR's")
    if "fnn" in times and "fm" in times:
        times[FNN_WITH_PRETRAINING] = {
            "seconds_per_epoch": times["fnn"]["seconds_per_epoch"] + times["fm"]["seconds_per_epoch"]
        }
    base = times["lr"]["seconds_per_epoch"]
    return {name: t | {"relative_to_lr": t["seconds_per_epoch"] / base} for name, t in times.items()}


def ordered(times: dict[str, dict[str, float]]) -> list[str]:
    names = [m for m in MODELS if m in times]
    if FNN_WITH_PRETRAINING in times:
        names.insert(names.index("fnn") + 1, FNN_WITH_PRETRAINING)
    return names


def show(times: dict[str, dict[str, float]], title: str) -> str:
    """Print the rich table; return the markdown one."""
    table = Table(title=title)
    for column in ("model", "s / epoch", "samples/s", "relative to LR"):
        table.add_column(column, justify="left" if column == "model" else "right")
    rows = []
    for name in ordered(times):
        t = times[name]
        rate = f"{t['samples_per_s']:,.0f}" if "samples_per_s" in t else ""
        row = [name, f"{t['seconds_per_epoch']:.2f}", rate, f"{t['relative_to_lr']:.2f}x"]
        table.add_row(*row)
        rows.append(row)
    console.print(table)
    return markdown_table(["model", "s / epoch", "samples/s", "relative to LR"], rows)


def plot(times: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Horizontal bars of the training time per epoch relative to LR."""
    plt = pyplot()
    names = ordered(times)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    ax.barh(names[::-1], [times[n]["relative_to_lr"] for n in names[::-1]], color="tab:green")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("training time per epoch relative to LR")
    ax.set_title(title.replace(": ", ":\n", 1), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model (early stopping off)")
    parser.add_argument("--repeats", type=int, default=1, help="time each model N times, keep the fastest")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    parser.add_argument("--from-table4", type=Path, default=None, help="reuse a Table IV JSON")
    parser.add_argument("--dataset", default="frappe", help="with --from-table4: which dataset's runs")
    add_run_options(parser, quick="20,000 rows, 2 epochs")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 2
    return args


def main() -> None:
    args = parse_args()
    root = args.out_dir / ("efficiency-quick" if args.quick else "efficiency")
    host, started = machine(), time.perf_counter()
    if args.from_table4 is not None:
        source = f"Table IV run {args.from_table4} ({args.dataset})"
        times = relative(from_table4(args.from_table4, args.dataset))
    else:
        source = f"frappe_ctr, {args.epochs} epochs per model, batch 4096, {args.threads} threads"
        times = relative(measure(args, root))
    title = f"Training time per epoch relative to LR: {source}"
    markdown = show(times, title)
    payload: dict[str, Any] = {"machine": host, "source": source, "settings": vars(args), "models": times}
    payload["elapsed_seconds"] = time.perf_counter() - started
    write_json(root / "efficiency.json", payload)
    (root / "efficiency.md").write_text(markdown)
    plot(times, root / "efficiency.png", title)
    console.print(f"wrote {root}/efficiency.md, efficiency.json, efficiency.png")


if __name__ == "__main__":
    main()
