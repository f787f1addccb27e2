"""Hyper-parameter study of DeepFM-D on frappe_ctr (the DeepFM paper's section IV-C).

One axis at a time from the defaults (relu, dropout 0.2, 400-400-400): activation, dropout, neurons
per layer (3 layers), number of layers (400 each) and network shape at a fixed 1,200 neurons over 3
layers. A setting shared by several axes (the defaults) trains once. Each run is an
``apprank train --model deepfm`` process writing a bundle under ``<out-dir>/hparams/bundles``;
finished runs are skipped when the bench is started again. Writes ``hparams.md``, ``hparams.json`` and
``hparams.png`` (one subplot per axis: test AUC, and logloss on the right axis).

    .venv/bin/python bench/hparams.py                     # 20 distinct settings, 1 seed
    .venv/bin/python bench/hparams.py --axes dropout shape --seeds 1 2 3 --jobs 2
    .venv/bin/python bench/hparams.py --quick             # 5,000 rows, 1 epoch, 2 values per axis
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from experiments_common import (
    FRAPPE,
    Run,
    add_parallel_options,
    add_run_options,
    machine,
    markdown_table,
    mean_std,
    pyplot,
    run_many,
    threads_per_job,
    write_json,
)
from rich.console import Console
from rich.table import Table

console = Console()
DEFAULTS: dict[str, Any] = {"activation": "relu", "dropout": 0.2, "hidden_units": [400, 400, 400]}
Setting = tuple[str, dict[str, Any]]  # (label on the axis, the hyperparameters that differ)
AXES: dict[str, list[Setting]] = {
    "activation": [(a, {"activation": a}) for a in ("relu", "tanh", "sigmoid")],
    "dropout": [(f"{d:g}", {"dropout": d}) for d in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)],
    "neurons per layer": [(str(n), {"hidden_units": [n] * 3}) for n in (100, 200, 400, 600, 800)],
    "hidden layers": [(str(k), {"hidden_units": [400] * k}) for k in (1, 2, 3, 4, 5)],
    "shape": [
        ("constant", {"hidden_units": [400, 400, 400]}),
        ("increasing", {"hidden_units": [200, 400, 600]}),
        ("decreasing", {"hidden_units": [600, 400, 200]}),
        ("diamond", {"hidden_units": [300, 600, 300]}),
    ],
}
QUICK_SETS = ("max_rows=5000", "epochs=1")


def full_params(changes: dict[str, Any]) -> dict[str, Any]:
    return DEFAULTS | changes


def run_name(params: dict[str, Any], seed: int) -> str:
    """A folder name that identifies the setting, so the defaults shared by axes train once."""
    hidden = "-".join(str(h) for h in params["hidden_units"])
    return f"{params['activation']}_d{params['dropout']:g}_h{hidden}_s{seed}"


def plan(args: argparse.Namespace, root: Path) -> dict[str, Run]:
    """Distinct runs by name, over the chosen axes and seeds."""
    threads = threads_per_job(args.jobs, args.threads)
    runs: dict[str, Run] = {}
    for axis in args.axes:
        settings = AXES[axis][:2] if args.quick else AXES[axis]
        for _, changes in settings:
            params = full_params(changes)
            for seed in args.seeds:
                name = run_name(params, seed)
                sets = [f"{key}={json.dumps(value)}" for key, value in params.items()]
                sets += [f"seed={seed}", *(QUICK_SETS if args.quick else ()), *args.set]
                sets += [f"threads={threads}"] if threads else []
                runs[name] = Run("deepfm", FRAPPE, root / "bundles" / name, tuple(sets))
    return runs


def collect(args: argparse.Namespace, metrics: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per axis, per setting: mean and std of test AUC and logloss over the seeds that ran."""
    study: dict[str, list[dict[str, Any]]] = {}
    for axis in args.axes:
        points = []
        for label, changes in AXES[axis][:2] if args.quick else AXES[axis]:
            params = full_params(changes)
            found = [metrics[n] for n in (run_name(params, s) for s in args.seeds) if n in metrics]
            if not found:
                continue
            auc = mean_std([m["test"]["auc"] for m in found])
            logloss = mean_std([m["test"]["logloss"] for m in found])
            epochs = [int(m["training"]["epochs"]) for m in found]
            points.append(
                {"value": label, "params": params, "auc_mean": auc[0], "auc_std": auc[1],
                 "logloss_mean": logloss[0], "logloss_std": logloss[1], "seeds": len(found),
                 "epochs": epochs}
            )  # fmt: skip
        study[axis] = points
    return study


def _figure(point: dict[str, Any], metric: str) -> str:
    """``mean`` for one seed, ``mean ± std`` for several."""
    text = f"{point[f'{metric}_mean']:.4f}"
    return text + (f" ± {point[f'{metric}_std']:.4f}" if point["seeds"] > 1 else "")


def show(study: dict[str, list[dict[str, Any]]]) -> str:
    """Print one rich table for the study; return the markdown table."""
    headers = ["axis", "value", "test AUC", "test logloss", "seeds", "epochs"]
    table = Table(title="DeepFM-D hyper-parameters on frappe_ctr (one axis at a time)")
    for column in headers:
        table.add_column(column, justify="left" if column in ("axis", "value") else "right")
    rows = []
    for axis, points in study.items():
        best = max(points, key=lambda p: p["auc_mean"])["value"] if points else None
        for p in points:
            mark = " (best)" if p["value"] == best else ""
            rows.append(
                [axis, p["value"] + mark, _figure(p, "auc"), _figure(p, "logloss"), str(p["seeds"]),
                 "/".join(map(str, p["epochs"]))]
            )  # fmt: skip
            table.add_row(*rows[-1])
    console.print(table)
    return markdown_table(headers, rows)


def plot(study: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """One subplot per axis: test AUC (left axis) and logloss (right axis) per value."""
    plt = pyplot()
    axes_used = [a for a, points in study.items() if points]
    fig, axes = plt.subplots(1, len(axes_used), figsize=(4 * len(axes_used), 3.6), squeeze=False)
    for ax, axis in zip(axes[0], axes_used, strict=True):
        points = study[axis]
        labels = [p["value"] for p in points]
        positions = list(range(len(points)))
        ax.errorbar(positions, [p["auc_mean"] for p in points], yerr=[p["auc_std"] for p in points],
                    marker="o", color="tab:blue", capsize=3)  # fmt: skip
        ax.set_xticks(positions, labels, rotation=30)
        ax.set_title(axis)
        ax.set_ylabel("test AUC", color="tab:blue")
        twin = ax.twinx()
        twin.plot(positions, [p["logloss_mean"] for p in points], marker="s", color="tab:orange")
        twin.set_ylabel("test logloss", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--axes", nargs="+", default=list(AXES), choices=list(AXES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    add_run_options(parser, quick="5,000 rows, 1 epoch, 2 values per axis")
    add_parallel_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    root = args.out_dir / ("hparams-quick" if args.quick else "hparams")
    host, started = machine(), time.perf_counter()
    runs = plan(args, root)
    outcomes = run_many(list(runs.values()), jobs=args.jobs, resume=not args.no_resume, console=console)
    metrics = {name: m for name, m in zip(runs, outcomes, strict=True) if m is not None}
    study = collect(args, metrics)
    markdown = show(study)
    elapsed = time.perf_counter() - started
    payload = {"machine": host, "elapsed_seconds": elapsed, "settings": vars(args), "defaults": DEFAULTS}
    payload |= {"axes": study, "failed": sorted(set(runs) - set(metrics))}
    write_json(root / "hparams.json", payload)
    (root / "hparams.md").write_text(markdown)
    plot(study, root / "hparams.png")
    console.print(f"{elapsed / 60:.1f} min; wrote {root}/hparams.md, hparams.json, hparams.png")
    if len(metrics) < len(runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
