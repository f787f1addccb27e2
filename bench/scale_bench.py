"""Training at scale: synthetic stores of growing size, prepared once, then one streamed DeepFM-D epoch.

For each size the store is generated in parts (``apprank synth``'s world and schema, written part by
part so that generating is bounded too), ``apprank prepare`` and ``apprank train --data <prepared>``
run as child processes, and each child's own peak RSS is taken from ``wait4`` (the background reader
threads live in the training process, so they are included). Then, on the smallest size, synchronous
and asynchronous reading alternate to give the paper's Table I speed-up.

    nice .venv/bin/python bench/scale_bench.py --sizes 1000000 10000000 --work /tmp/apprank-scale \\
        --out bench/results/scale_bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model.files import TableWriter, save_schema_yaml  # noqa: E402
from simulation.synth import AppStoreWorld, SynthConfig  # noqa: E402
from simulation.synth_cli import SPLIT_FRACTIONS  # noqa: E402

PART_ROWS = 500_000
console = Console()


def generate(folder: Path, rows: int, seed: int = 7) -> None:
    """train/valid/test Parquet files of ``rows`` impressions in all (7:2:1), part by part."""
    if (folder / "synth.json").is_file():
        return
    config = SynthConfig(seed=seed)
    world = AppStoreWorld(config)
    folder.mkdir(parents=True, exist_ok=True)
    save_schema_yaml(world.schema, folder / "schema.yaml")
    streams = np.random.SeedSequence([seed, 2]).spawn(len(SPLIT_FRACTIONS))
    for (split, fraction), stream in zip(SPLIT_FRACTIONS.items(), streams, strict=True):
        total = max(1, round(rows * fraction))
        rngs = [np.random.default_rng(s) for s in stream.spawn(-(-total // PART_ROWS))]
        with TableWriter(folder / f"{split}.parquet", world.schema) as writer:
            for part, rng in enumerate(rngs):
                chunk = world.sample_impressions(min(PART_ROWS, total - part * PART_ROWS), rng)
                writer.write(chunk.labels, chunk.columns)
    (folder / "synth.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def run_child(args: list[str]) -> tuple[float, float]:
    """Run ``apprank <args>``; (wall seconds, peak RSS MiB of that process alone)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "apprank", *args], cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"apprank {' '.join(args)} failed with {process.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024.0


def train(prepared: Path, out: Path, sets: list[str]) -> dict[str, Any]:
    """One streamed DeepFM-D epoch; the bundle's figures plus the process's peak RSS."""
    flags = [arg for item in ["epochs=1", *sets] for arg in ("--set", item)]
    wall, rss = run_child(["train", "--data", str(prepared), "--out", str(out), "--model", "deepfm", *flags])
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return {
        "train_wall_s": wall,
        "train_peak_rss_mib": rss,
        "samples_per_s": metrics["training"]["train_samples_per_s"],
        "test_auc": metrics["test"]["auc"],
    }


def measure_size(rows: int, work: Path, sets: list[str]) -> dict[str, Any]:
    data, prepared = work / f"synth-{rows}", work / f"prepared-{rows}"
    started = time.perf_counter()
    generate(data, rows)
    generated = time.perf_counter() - started
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
        "generate_s": generated,
        "prepare_s": prepare_wall,
        "prepare_peak_rss_mib": prepare_rss,
        "prepared_mib": shard_bytes / 2**20,
        "bytes_per_row": shard_bytes / rows,
    } | figures


def loader_speedup(prepared: Path, work: Path, repeats: int, sets: list[str]) -> dict[str, float]:
    """Streamed samples/s with synchronous vs asynchronous reading (alternating runs, best of each)."""
    speeds: dict[str, list[float]] = {"sync": [], "async": []}
    for _ in range(repeats):
        for mode, flag in (("sync", "false"), ("async", "true")):
            result = train(prepared, work / f"loader-{mode}", [*sets, f"async_loading={flag}"])
            speeds[mode].append(result["samples_per_s"])
    sync, asynchronous = max(speeds["sync"]), max(speeds["async"])
    return {"sync_samples_per_s": sync, "async_samples_per_s": asynchronous, "speedup": asynchronous / sync}


def report(results: dict[str, Any]) -> None:
    table = Table(title=f"streamed DeepFM-D, 1 epoch ({results['machine']})")
    columns = (
        ("rows", "rows", "{:,}"), ("prepare s", "prepare_s", "{:.0f}"),
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
            f"streamed reading: sync {loader['sync_samples_per_s']:,.0f} vs async "
            f"{loader['async_samples_per_s']:,.0f} samples/s -> speed-up x{loader['speedup']:.2f}"
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
    for rows in args.sizes:
        console.log(f"{rows:,} rows: generate, prepare, train one epoch ...")
        results["sizes"].append(measure_size(rows, args.work, args.sets))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # what is done survives an interruption
    if args.loader_repeats > 0:
        console.log("sync vs async reading of the streamed data ...")
        smallest = args.work / f"prepared-{min(args.sizes)}"
        results["loader"] = loader_speedup(smallest, args.work, args.loader_repeats, args.sets)
    report(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
