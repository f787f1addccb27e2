"""Helpers shared by the model-family experiments (table4, efficiency, hparams, ddp_speedup).

Every training run is ``python -m apprank train`` in a child process writing a real bundle, exactly as
a user would run it; its figures are read back from the bundle's ``metrics.json``. A run is resumable:
when its bundle and its sidecar (``<bundle>.run.json``, with the command and the wall time) exist, the
recorded result is returned without training again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from model.nets import REGISTRY
from model.nets.params import DeepParams

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("APPRANK_DATA_DIR", REPO.parent / "shared" / "data"))
FRAPPE = DATA_ROOT / "frappe_ctr"
CRITEO = DATA_ROOT / "criteo" / "criteo_10k.csv"
DEFAULT_OUT = REPO / "bench" / "results"
MODELS = tuple(REGISTRY)  # the registry's order: lr, fm, dnn, fnn, ... deepfm_star
LOG_TAIL_LINES = 30


def has_deep_part(model: str) -> bool:
    """True for the models with an MLP (they accept ``hidden_units``, ``dropout``...)."""
    return issubclass(REGISTRY[model].params, DeepParams)


class RunFailed(RuntimeError):
    """A child ``apprank train`` exited with an error; the message carries the tail of its log."""


@dataclass(frozen=True)
class Run:
    """One ``apprank train`` invocation.

    Attributes:
        model: registry name.
        data: a data directory or a single file.
        out: the bundle directory to write.
        sets: ``--set key=value`` overrides, in order.
        nproc: data-parallel processes (``--nproc``).
        env: extra environment variables for the child.
        config: a YAML config (``--config``); its text is part of what identifies the run.
    """

    model: str
    data: Path
    out: Path
    sets: tuple[str, ...] = ()
    nproc: int = 1
    env: dict[str, str] = field(default_factory=dict)
    config: Path | None = None

    @property
    def sidecar(self) -> Path:
        return self.out.with_name(self.out.name + ".run.json")

    @property
    def log(self) -> Path:
        return self.out.with_name(self.out.name + ".log")

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "apprank", "train", "--model", self.model]
        # absolute: the child runs in the repository, the bench may have been started elsewhere
        cmd += ["--data", str(self.data.absolute()), "--out", str(self.out.absolute())]
        if self.config is not None:
            cmd += ["--config", str(self.config.absolute())]
        for item in self.sets:
            cmd += ["--set", item]
        if self.nproc > 1:
            cmd += ["--nproc", str(self.nproc)]
        return cmd


def is_done(run: Run) -> bool:
    """True when the run's bundle and its sidecar were written by the same command line."""
    if not (run.sidecar.is_file() and (run.out / "metrics.json").is_file()):
        return False
    sidecar = json.loads(run.sidecar.read_text())
    recorded: list[str] = sidecar["command"]
    return _identity(recorded) == _identity(run.command()) and sidecar.get("config") == _config_text(run)


def _config_text(run: Run) -> str | None:
    return run.config.read_text() if run.config is not None else None


def _identity(command: list[str]) -> list[str]:
    """What decides a run's result: the command without the interpreter's path and ``threads=``."""
    args = command[1:]
    kept: list[str] = []
    for i, arg in enumerate(args):
        threads_value = arg.startswith("threads=")
        threads_flag = arg == "--set" and i + 1 < len(args) and args[i + 1].startswith("threads=")
        if not (threads_value or threads_flag):
            kept.append(arg)
    return kept


def execute(run: Run, *, resume: bool = True) -> dict[str, Any]:
    """Train (unless ``resume`` and done) and return the bundle's metrics plus ``wall_seconds``.

    Raises:
        RunFailed: the child process failed; the message ends with its log's last lines.
    """
    if resume and is_done(run):
        recorded: dict[str, Any] = json.loads(run.sidecar.read_text())["metrics"]
        return recorded
    run.out.parent.mkdir(parents=True, exist_ok=True)
    run.sidecar.unlink(missing_ok=True)
    started = time.perf_counter()
    with run.log.open("w") as log:
        env = {**os.environ, **run.env}
        done = subprocess.run(run.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(run.log.read_text().splitlines()[-LOG_TAIL_LINES:])
        raise RunFailed(f"{' '.join(run.command())} exited {done.returncode}:\n{tail}")
    metrics: dict[str, Any] = json.loads((run.out / "metrics.json").read_text())
    metrics["wall_seconds"] = wall
    record = {"command": run.command(), "env": run.env, "wall_seconds": wall, "metrics": metrics}
    record["config"] = _config_text(run)
    run.sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return metrics


def run_many(
    runs: Sequence[Run], *, jobs: int = 1, resume: bool = True, console: Console | None = None
) -> list[dict[str, Any] | None]:
    """Execute ``runs``, ``jobs`` at a time; the metrics of each, None where it failed.

    A failure is logged (with the tail of the child's log) and the other runs go on.
    """
    console = console or Console()
    todo = sum(not (resume and is_done(run)) for run in runs)
    console.log(f"{len(runs)} runs: {todo} to train, {len(runs) - todo} already done")

    def one(run: Run) -> dict[str, Any] | None:
        try:
            metrics = execute(run, resume=resume)
        except RunFailed as error:
            console.log(f"[red]failed[/red]: {run.out} (log: {run.log})\n{error}")
            return None
        test = metrics.get("test", {})
        console.log(
            f"{'/'.join(run.out.parts[-3:])}: test AUC {test.get('auc', math.nan):.4f}, "
            f"{int(metrics['training']['epochs'])} epochs, {metrics['wall_seconds']:.0f} s"
        )
        return metrics

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))


def add_run_options(parser: argparse.ArgumentParser, quick: str) -> None:
    """The options every offline bench shares; ``quick`` says what ``--quick`` shrinks the runs to."""
    parser.add_argument("--set", action="append", default=[], help="extra key=value for every run")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-resume", action="store_true", help="retrain runs that are already done")
    parser.add_argument("--quick", action="store_true", help=quick)


def add_parallel_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs`` and ``--threads`` (see ``threads_per_job``)."""
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (threads split among them)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all)")


def threads_per_job(jobs: int, threads: int | None) -> int | None:
    """torch threads for each of ``jobs`` parallel runs: the cores shared out, unless given."""
    if threads is not None or jobs <= 1:
        return threads
    return max(1, (os.cpu_count() or 1) // jobs)


def machine() -> dict[str, Any]:
    """What the figures were measured on (CPU model, cores, load when the bench started)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table; columns after the first are right-aligned."""
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON (paths as strings), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
