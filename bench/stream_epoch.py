"""One DeepFM-D epoch on frappe_ctr, in memory vs streamed, sync vs async, under each OpenMP wait policy.

The profile behind ``training/__init__``'s ``OMP_WAIT_POLICY=PASSIVE``: in one process per policy
(the policy is read when torch loads OpenMP), the same model trains one epoch from the in-memory
tensors and one streamed from the prepared split, each with synchronous and asynchronous batch
preparation, alternating; per epoch it prints wall seconds, user CPU seconds and voluntary context
switches (a spinning OpenMP worker makes few, a sleeping one many). Policies alternate too (ACTIVE,
PASSIVE, ACTIVE, ...), so the machine's load falls on both alike.

    nice .venv/bin/python bench/stream_epoch.py --prepared /tmp/frappe-prepared \\
        --out bench/results/stream_epoch.json

``--prepared`` is ``apprank prepare --data ../shared/data/frappe_ctr --out DIR`` (made when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("APPRANK_DATA_DIR", REPO.parent / "shared" / "data")) / "frappe_ctr"
VARIANTS = (("memory", False), ("memory", True), ("streamed", False), ("streamed", True))


def child(prepared: Path) -> None:
    """Train the variants one epoch each (in this process, under its policy); print JSON lines."""
    sys.path.insert(0, str(REPO))
    from rich.console import Console

    from model.nets import build_model
    from training.checkpoint import LoopState
    from training.config import TrainConfig
    from training.prepared.format import Block
    from training.prepared.loader import StreamTrain, block_data
    from training.prepared.progress import row_progress
    from training.prepared.reader import PreparedDataset
    from training.trainer import Trainer, seed_everything

    dataset = PreparedDataset(prepared)
    config = TrainConfig(epochs=1)
    stream = StreamTrain(
        dataset, "train", batch_size=config.batch_size, seed=config.seed,
        buffer_rows=config.stream.shuffle_buffer_rows,
    )  # fmt: skip
    memory = block_data(Block.concat([dataset.reader().read(g) for g in dataset.row_groups("train")]))
    console = Console(stderr=True)
    trainer = Trainer(build_model("deepfm", dataset.encoder.layout, {}), config, console)
    generator = seed_everything(config.seed)
    with row_progress(console, disable=True) as bar:
        for epoch, (source, asynchronous) in enumerate(VARIANTS, start=1):
            trainer.config = config.model_copy(update={"async_loading": asynchronous})
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            loop = LoopState()
            loop.epoch = epoch
            trainer._train_epoch(memory if source == "memory" else stream, generator, bar, loop, None)
            wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
            row = {
                "source": source, "async": asynchronous, "wall_s": wall,
                "user_s": after.ru_utime - before.ru_utime,
                "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
                "samples_per_s": len(memory) / wall,
            }  # fmt: skip
            print(json.dumps(row), flush=True)  # noqa: T201 - for the parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("/tmp/apprank-frappe-prepared"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "stream_epoch.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.prepared)
        return
    if not (args.prepared / "manifest.json").is_file():
        prepare = [
            sys.executable,
            "-m",
            "apprank",
            "prepare",
            "--data",
            str(DATA),
            "--out",
            str(args.prepared),
        ]
        subprocess.run(prepare, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for policy in ("ACTIVE", "PASSIVE"):
            command = [sys.executable, __file__, "--child", "--prepared", str(args.prepared)]
            env = os.environ | {"OMP_WAIT_POLICY": policy}
            done = subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True, text=True)
            for line in done.stdout.splitlines():
                row = json.loads(line) | {"policy": policy, "repeat": repeat}
                rows.append(row)
                mode = "async" if row["async"] else "sync"
                print(  # noqa: T201
                    f"{policy:8} {row['source']:9} {mode:6} {row['wall_s']:6.1f} s  "
                    f"user {row['user_s']:5.1f} s  voluntary switches {row['voluntary_switches']:6d}  "
                    f"{row['samples_per_s']:8,.0f} samples/s"
                )
    load = os.getloadavg()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_after": load, "epochs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"load average after: {load[0]:.1f}; wrote {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
