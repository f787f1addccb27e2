"""``apprank train`` and ``apprank evaluate``. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from training.launch import DEFAULT_MASTER_PORT, LaunchError, Topology, without_launch_options

console = Console()
err_console = Console(stderr=True)


def _require_training_extras() -> None:
    """Exit with a clear message when torch is missing (a serving-only install)."""
    try:
        import torch  # noqa: F401 - the command imports it next anyway
    except ImportError:
        err_console.print("[red]error:[/red] training needs the `train` extra: pip install 'apprank[train]'")
        raise typer.Exit(2) from None


def train(
    data: Annotated[Path, typer.Option(help="a data file, or a directory with train/valid/test files")],
    out: Annotated[Path, typer.Option(help="bundle directory to write")],
    model: Annotated[str | None, typer.Option(help="registry name: lr, fm, deepfm, ...")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML training config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key=value (repeatable)")] = None,
    schema: Annotated[Path | None, typer.Option(help="feature schema YAML/JSON (default: detected)")] = None,
    resume: Annotated[Path | None, typer.Option(help="bundle to continue training from")] = None,
    nproc: Annotated[int, typer.Option(min=1, help="data-parallel processes (torchrun; gloo on CPU)")] = 1,
    nnodes: Annotated[int, typer.Option(min=1, help="machines in the run (torchrun rendezvous)")] = 1,
    node_rank: Annotated[int, typer.Option(min=0, help="this machine's rank; node 0 writes the bundle")] = 0,
    master_addr: Annotated[str | None, typer.Option(help="host or IP of node 0 (--nnodes > 1)")] = None,
    master_port: Annotated[int, typer.Option(help="rendezvous TCP port on node 0")] = DEFAULT_MASTER_PORT,
) -> None:
    """Train a model and write a verified model bundle (ONNX + encoder + schema + manifest)."""
    _require_training_extras()
    from training.distributed import in_launched_process, launch

    if not in_launched_process():
        try:
            topology = Topology(nproc, nnodes, node_rank, master_addr, master_port)
        except LaunchError as error:
            err_console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from None
        if topology.needs_launch:
            raise typer.Exit(launch(topology, without_launch_options(sys.argv[1:])))
    from model.schema import FeatureSchema
    from training.config import ConfigError, load_config
    from training.pipeline import ExportError, describe, train_bundle
    from training.readers.base import ReaderError

    try:
        train_config = load_config(config, tuple(set_ or ()), model=model)
        feature_schema = FeatureSchema.load(schema) if schema is not None else None
        result = train_bundle(
            data, out, train_config, schema=feature_schema, resume=resume, console=err_console
        )
    except (ConfigError, ReaderError, ExportError, FileNotFoundError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if result is None:
        return  # a non-zero rank of a data-parallel run: rank 0 reports
    table = Table(title=f"apprank train: {result.manifest.name}", show_header=False)
    for key, value in describe(result):
        table.add_row(key, value)
    console.print(table)


def evaluate(
    bundles: Annotated[list[Path], typer.Argument(help="bundle directories")],
    data: Annotated[Path, typer.Option(help="data file or directory")],
    split: Annotated[str, typer.Option(help="train, valid or test when --data is a directory")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    png: Annotated[Path | None, typer.Option(help="write a chart (metrics + reliability diagram)")] = None,
) -> None:
    """AUC, logloss and calibration of each bundle, scored by ONNX Runtime as the service does."""
    _require_training_extras()
    from model.bundle import BundleError
    from training.evaluate import evaluate_bundle, plot_evaluations
    from training.readers.base import ReaderError

    try:
        results = [evaluate_bundle(path, data, split) for path in bundles]
    except (BundleError, ReaderError, FileNotFoundError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if png is not None:
        plot_evaluations(results, png)
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in results]))
        return
    table = Table(title=f"apprank evaluate ({results[0].split} split)")
    for column in ("bundle", "model", "version", "rows", "AUC", "logloss", "calibration"):
        table.add_column(column, justify="left" if column in {"bundle", "model", "version"} else "right")
    for r in results:
        m = r.metrics
        table.add_row(
            r.bundle, r.model, r.version, f"{int(m['rows']):,}", f"{m['auc']:.4f}", f"{m['logloss']:.4f}",
            f"{m['calibration']:.3f}",
        )  # fmt: skip
    console.print(table)
    if png is not None:
        console.print(f"chart: {png}")


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``apprank`` CLI."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
