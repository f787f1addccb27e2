"""Training at scale: synthetic stores of growing size, prepared once, then one streamed DeepFM-D epoch.

For each size ``apprank synth`` (Parquet, written part by part, so generating is bounded too),
``apprank prepare`` and ``apprank train --data <prepared>`` run as child processes, and each child's own
peak RSS is its ``VmHWM`` polled while it runs (``procstat``; not ``wait4``'s ``ru_maxrss``, which Linux
carries over ``exec`` from the parent; the background reader threads live in the training process, so
they are included). Then, on the smallest size, synchronous
and asynchronous reading alternate to give the paper's Table I speed-up.

    nice .venv/bin/python bench/scale_bench.py --sizes 1000000 10000000 --work /tmp/apprank-scale \\
        --out bench/results/scale_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from procstat import run_peak  # noqa: E402

SEED = 7
console = Console(width=160)


def generate(folder: Path, rows: int, seed: int = SEED) -> tuple[float, float]:
    """``apprank synth`` (Parquet, written part by part) as a child; (wall s, its peak RSS MiB)."""
    if (folder / "synth.json").is_file():
        return float("nan"), float("nan")
    args = ["synth", "--out", str(folder), "--rows", str(rows), "--seed", str(seed), "--format", "parquet"]
    return run_child(args)


def run_child(args: list[str]) -> tuple[float, float]:
    """Run ``apprank <args>``; (wall seconds, peak RSS MiB of that process alone, reader threads included)."""
    try:
        return run_peak([sys.executable, "-m", "apprank", *args], cwd=REPO)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"apprank {' '.join(args)} failed with {error.returncode}") from error


def train(prepared: Path, out: Path, sets: list[str]) -> dict[str, Any]:
    """One streamed DeepFM-D epoch; the bundle's figures plus the process's peak RSS."""
    flags = [arg for item in ["epochs=1", *sets] for arg in ("--set", item)]
    wall, rss = run_child(["train", "--data", str(prepared), "--out", str(out), "--model", "deepfm", *flags])
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return {
        "train_wall_s": wall,
        "train_peak_rss_mib": rss,
        "samples_per_s": metrics["training"]["train_samples_per_s"],
        "epoch_s": metrics["training"]["train_seconds"],
        "data_wait_s": metrics["training"].get("train_data_wait_s", float("nan")),
        "test_auc": metrics["test"]["auc"],
    }


def measure_size(rows: int, work: Path, sets: list[str]) -> dict[str, Any]:
    data, prepared = work / f"synth-{rows}", work / f"prepared-{rows}"
    generate_wall, generate_rss = generate(data, rows)
    if not prepared.exists():
        prepare_wall, prepare_rss = run_child(["prepare", "--data", str(data), "--out", str(prepared)])
    else:
        prepare_wall, prepare_rss = float("nan"), float("nan")
    manifest = json.loads((prepared / "manifest.json").read_text())
    shard_bytes = sum(p.stat().st_size for p in prepared.rglob("*.parquet"))
    figures = train(prepared, work / f"bundle-{rows}", sets)
    return {
        "rows": rows,
        "train_rows": manifest["splits"]["train"]["rows"],
        "generate_s": generate_wall,
        "generate_peak_rss_mib": generate_rss,
        "prepare_s": prepare_wall,
        "prepare_peak_rss_mib": prepare_rss,
        "prepared_mib": shard_bytes / 2**20,
        "bytes_per_row": shard_bytes / rows,
    } | figures


def loader_speedup(prepared: Path, work: Path, repeats: int, sets: list[str]) -> dict[str, Any]:
    """Streamed samples/s with synchronous vs asynchronous reading, alternating runs.

    Besides samples/s (median and best of each mode, and the ratio of each adjacent pair), each run
    records how long the training loop waited for its next batch: synchronously that is the whole data
    path (read, decode, shuffle, assemble), asynchronously only what the background reader did not hide.
    The wait is the mechanism; samples/s on a shared machine also carries the load of the moment.
    """
    runs: dict[str, list[dict[str, Any]]] = {"sync": [], "async": []}
    for _ in range(repeats):
        for mode, flag in (("sync", "false"), ("async", "true")):
            result = train(prepared, work / f"loader-{mode}", [*sets, f"async_loading={flag}"])
            runs[mode].append(result)
            console.log(
                f"{mode}: {result['samples_per_s']:,.0f} samples/s, epoch {result['epoch_s']:.1f} s, "
                f"waited {result['data_wait_s']:.2f} s for data"
            )
    speeds = {mode: [r["samples_per_s"] for r in done] for mode, done in runs.items()}
    waits = {mode: [r["data_wait_s"] for r in done] for mode, done in runs.items()}
    epochs = {mode: [r["epoch_s"] for r in done] for mode, done in runs.items()}
    pairs = [a / s for s, a in zip(speeds["sync"], speeds["async"], strict=True)]
    return {
        "repeats": repeats,
        "sync_samples_per_s": statistics.median(speeds["sync"]),
        "async_samples_per_s": statistics.median(speeds["async"]),
        "speedup": statistics.median(speeds["async"]) / statistics.median(speeds["sync"]),
        "best_speedup": max(speeds["async"]) / max(speeds["sync"]),
        "pair_speedups": pairs,
        "sync_data_wait_s": statistics.median(waits["sync"]),
        "async_data_wait_s": statistics.median(waits["async"]),
        "sync_epoch_s": statistics.median(epochs["sync"]),
        "async_epoch_s": statistics.median(epochs["async"]),
        "runs": runs,
    }


def report(results: dict[str, Any]) -> None:
    table = Table(title=f"streamed DeepFM-D, 1 epoch ({results['machine']})")
    columns = (
        ("rows", "rows", "{:,}"), ("synth s", "generate_s", "{:.0f}"),
        ("synth RSS MiB", "generate_peak_rss_mib", "{:,.0f}"), ("prepare s", "prepare_s", "{:.0f}"),
        ("prepare RSS MiB", "prepare_peak_rss_mib", "{:,.0f}"), ("shards MiB", "prepared_mib", "{:,.0f}"),
        ("samples/s", "samples_per_s", "{:,.0f}"), ("train s", "train_wall_s", "{:.0f}"),
        ("train RSS MiB", "train_peak_rss_mib", "{:,.0f}"), ("test AUC", "test_auc", "{:.4f}"),
    )  # fmt: skip
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for size in results["sizes"]:
        table.add_row(*(form.format(size[key]) for _, key, form in columns))
    console.print(table)
    sizes = results["sizes"]
    if len(sizes) > 1:
        small, large = sizes[0]["train_peak_rss_mib"], sizes[-1]["train_peak_rss_mib"]
        growth = large / small - 1
        console.print(
            f"training peak RSS at {sizes[-1]['rows']:,} rows: {large:,.0f} MiB "
            f"(<= 1.5 GB: {large <= 1536}); "
            f"vs {sizes[0]['rows']:,} rows: {growth:+.1%} (within 15 %: {abs(growth) <= 0.15})"
        )
    if "loader" in results:
        loader = results["loader"]
        console.print(
            f"streamed reading, median of {loader['repeats']} alternating runs: sync "
            f"{loader['sync_samples_per_s']:,.0f} vs async {loader['async_samples_per_s']:,.0f} samples/s -> "
            f"x{loader['speedup']:.2f} (pairs: {', '.join(f'x{p:.2f}' for p in loader['pair_speedups'])}); "
            f"waiting for data: {loader['sync_data_wait_s']:.2f} s sync vs "
            f"{loader['async_data_wait_s']:.2f} s async of a {loader['sync_epoch_s']:.1f} / "
            f"{loader['async_epoch_s']:.1f} s epoch"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/apprank-scale"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale_bench.json")
    parser.add_argument("--loader-repeats", type=int, default=2)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra training setting")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "sizes": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for position, rows in enumerate(sorted(args.sizes)):
        console.log(f"{rows:,} rows: generate, prepare, train one epoch ...")
        results["sizes"].append(measure_size(rows, args.work, args.sets))
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # what is done survives an interruption
        if position == 0 and args.loader_repeats > 0:  # on the smallest size, before the long runs
            console.log("sync vs async reading of the streamed data ...")
            prepared = args.work / f"prepared-{rows}"
            results["loader"] = loader_speedup(prepared, args.work, args.loader_repeats, args.sets)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
