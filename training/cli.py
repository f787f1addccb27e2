"""``apprank train`` and ``apprank evaluate``. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from training.launch import DEFAULT_MASTER_PORT, LaunchError, Topology, without_launch_options

console = Console()
err_console = Console(stderr=True)


def _print_error(error: Exception) -> None:
    """``error: <message>``, the message as plain text (no markup, and no ``:1234:`` read as an emoji)."""
    err_console.print(Text.assemble(("error:", "red"), " ", str(error)))


def _require_training_extras() -> None:
    """Exit with a clear message when torch is missing (a serving-only install)."""
    try:
        import torch  # noqa: F401 - the command imports it next anyway
    except ImportError:
        err_console.print("[red]error:[/red] training needs the `train` extra: pip install 'apprank[train]'")
        raise typer.Exit(2) from None


def train(
    data: Annotated[
        Path, typer.Option(help="a data file, a directory with train/valid/test files, or a prepared dataset")
    ],
    out: Annotated[Path, typer.Option(help="bundle directory to write")],
    model: Annotated[str | None, typer.Option(help="registry name: lr, fm, deepfm, ...")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML training config")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key=value (repeatable)")] = None,
    schema: Annotated[Path | None, typer.Option(help="feature schema YAML/JSON (default: detected)")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="a bundle to warm-start from, or a step-checkpoint folder (<out>.checkpoints) to continue"
        ),
    ] = None,
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
            _print_error(error)
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
    except (ConfigError, ReaderError, ExportError, FileNotFoundError, FileExistsError, ValueError) as error:
        _print_error(error)
        raise typer.Exit(2) from None
    if result is None:
        return  # a non-zero rank of a data-parallel run: rank 0 reports
    table = Table(title=f"apprank train: {result.manifest.name}", show_header=False)
    for key, value in describe(result):
        table.add_row(key, value)
    console.print(table)


def prepare(
    data: Annotated[
        Path, typer.Option(help="raw data: a file, a folder of train/valid/test files, a dataset YAML")
    ],
    out: Annotated[Path, typer.Option(help="prepared dataset folder to write (must not exist)")],
    schema: Annotated[Path | None, typer.Option(help="feature schema YAML/JSON (default: detected)")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML training config (its prepare section, seed...)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key=value (repeatable)")] = None,
) -> None:
    """Fit the encoder in one streaming pass and write the encoded rows as Parquet shards + manifest."""
    _require_training_extras()
    from model.schema import FeatureSchema
    from training.config import ConfigError, load_config
    from training.datasets import resolve_dataset
    from training.prepared.writer import prepare_dataset
    from training.readers.base import ReaderError

    try:
        train_config = load_config(config, tuple(set_ or ()))
        feature_schema = FeatureSchema.load(schema) if schema is not None else None
        splits = resolve_dataset(data, feature_schema, seed=train_config.seed)
        manifest = prepare_dataset(splits, out, train_config, console=err_console)
    except (ConfigError, ReaderError, FileNotFoundError, FileExistsError, ValueError) as error:
        _print_error(error)
        raise typer.Exit(2) from None
    table = Table(title=f"apprank prepare: {out}")
    for column in ("split", "rows", "shards", "row groups"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, info in manifest.splits.items():
        groups = sum(len(shard.row_groups) for shard in info.shards)
        table.add_row(name, f"{info.rows:,}", str(len(info.shards)), str(groups))
    console.print(table)
    if manifest.hashed_fallback:
        cap = manifest.vocab_cap
        console.print(f"hashed (vocabulary past {cap:,}): {', '.join(manifest.hashed_fallback)}")


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
        _print_error(error)
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
    app.command("prepare")(prepare)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
