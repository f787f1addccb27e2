"""Train LR, FM and DeepFM-D on the canonical frappe_ctr split with the defaults; print a table, write JSON.

Each model trains in its own ``apprank train`` process (so ``peak_rss_mib`` is that model's), writing a
real bundle under ``--bundles``; the figures come from the bundle's own metrics. Then DeepFM-D trains a
few epochs with synchronous and with asynchronous batch preparation, alternating, to report the
speed-up of the background loader. Last, the same split is prepared (``apprank prepare``) and DeepFM-D
trains on it streamed, with the same seed and settings, for the streaming column: its test AUC against
the in-memory run's, and its samples/s as a share of the in-memory run's.

    .venv/bin/python bench/train_frappe.py --out bench/results/train_frappe.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("APPRANK_DATA_DIR", REPO.parent / "shared" / "data")) / "frappe_ctr"
MODELS = ("lr", "fm", "deepfm")
console = Console()


def train(model: str, out: Path, sets: list[str], data: Path = DATA) -> dict[str, Any]:
    """Run ``apprank train`` in a child process and return the bundle's metrics."""
    command = [
        sys.executable,
        "-m",
        "apprank",
        "train",
        "--model",
        model,
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    for item in sets:
        command += ["--set", item]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - started
    return metrics


def loader_speedup(epochs: int, repeats: int) -> dict[str, float]:
    """DeepFM-D throughput with synchronous vs asynchronous batch preparation (alternating runs)."""
    speeds: dict[str, list[float]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for mode, flag in (("sync", "false"), ("async", "true")):
                sets = [f"epochs={epochs}", f"async_loading={flag}", "early_stopping.patience=100"]
                metrics = train("deepfm", Path(tmp) / mode, sets)
                speeds[mode].append(metrics["training"]["train_samples_per_s"])
    sync, asynchronous = max(speeds["sync"]), max(speeds["async"])
    return {"sync_samples_per_s": sync, "async_samples_per_s": asynchronous, "speedup": asynchronous / sync}


def streaming(in_memory: dict[str, Any]) -> dict[str, float]:
    """DeepFM-D streamed from the prepared split vs the in-memory run (same seed and settings)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        command = [sys.executable, "-m", "apprank", "prepare", "--data", str(DATA), "--out", str(prepared)]
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        metrics = train("deepfm", Path(tmp) / "streamed", [], data=prepared)
    auc = metrics["test"]["auc"]
    speed = metrics["training"]["train_samples_per_s"]
    return {
        "test_auc": auc,
        "auc_difference": auc - in_memory["test_auc"],
        "epochs": metrics["training"]["epochs"],
        "train_samples_per_s": speed,
        "speed_share": speed / in_memory["train_samples_per_s"],
        "peak_rss_mib": metrics["training"]["peak_rss_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_frappe.json")
    parser.add_argument("--bundles", type=Path, default=REPO / "artifacts" / "frappe")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--loader-epochs", type=int, default=2)
    parser.add_argument("--loader-repeats", type=int, default=2)
    parser.add_argument("--no-streaming", action="store_true", help="skip the streamed DeepFM-D run")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "models": {}}
    for model in args.models:
        console.log(f"training {model} ...")
        metrics = train(model, args.bundles / model, [])
        results["models"][model] = {
            "test_auc": metrics["test"]["auc"],
            "test_logloss": metrics["test"]["logloss"],
            "calibration": metrics["test"]["calibration"],
            "epochs": int(metrics["training"]["epochs"]),
            "train_samples_per_s": metrics["training"]["train_samples_per_s"],
            "peak_rss_mib": metrics["training"]["peak_rss_mib"],
            "wall_seconds": metrics["wall_seconds"],
        }
    if args.loader_repeats > 0:
        console.log("sync vs async batch preparation (DeepFM-D) ...")
        results["loader"] = loader_speedup(args.loader_epochs, args.loader_repeats)
    if not args.no_streaming and "deepfm" in results["models"]:
        console.log("DeepFM-D streamed from the prepared split ...")
        results["streaming"] = streaming(results["models"]["deepfm"])
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


COLUMNS = (
    ("test AUC", "test_auc", "{:.4f}"),
    ("test logloss", "test_logloss", "{:.4f}"),
    ("calibration", "calibration", "{:.3f}"),
    ("epochs", "epochs", "{}"),
    ("samples/s", "train_samples_per_s", "{:,.0f}"),
    ("peak RSS MiB", "peak_rss_mib", "{:,.0f}"),
    ("wall s", "wall_seconds", "{:.0f}"),
)


def report(results: dict[str, Any]) -> None:
    """Print the table and the checks against the issue's targets."""
    table = Table(title=f"frappe_ctr test split ({results['machine']})")
    table.add_column("model")
    for title, _, _ in COLUMNS:
        table.add_column(title, justify="right")
    models: dict[str, dict[str, float]] = results["models"]
    for name, figures in models.items():
        table.add_row(name, *(form.format(figures[key]) for _, key, form in COLUMNS))
    console.print(table)
    if set(MODELS) <= set(models):
        auc = {name: models[name]["test_auc"] for name in MODELS}
        console.print(f"order LR < FM < DeepFM-D in AUC: {auc['lr'] < auc['fm'] < auc['deepfm']}")
        console.print(f"DeepFM-D AUC >= 0.985: {auc['deepfm'] >= 0.985}")
        console.print(f"DeepFM-D >= 40,000 samples/s: {models['deepfm']['train_samples_per_s'] >= 40_000}")
    if "streaming" in results:
        stream = results["streaming"]
        console.print(
            f"streamed DeepFM-D: test AUC {stream['test_auc']:.4f} "
            f"({stream['auc_difference']:+.4f} vs in memory, "
            f"within 0.001: {abs(stream['auc_difference']) <= 0.001}), {stream['train_samples_per_s']:,.0f} "
            f"samples/s = {stream['speed_share']:.0%} of in memory (>= 90 %: {stream['speed_share'] >= 0.9})"
        )
    if "loader" in results:
        loader = results["loader"]
        console.print(
            f"batch preparation: sync {loader['sync_samples_per_s']:,.0f} vs async "
            f"{loader['async_samples_per_s']:,.0f} samples/s -> speed-up x{loader['speedup']:.2f}"
        )


if __name__ == "__main__":
    main()
