"""``apprank tune``: search a model's hyper-parameters; heavy imports happen inside the command."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

console = Console()
err_console = Console(stderr=True)


class TrialPrinter:
    """Prints one line per finished trial: its number, state, value and epochs, and the best so far."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        epochs = trial.user_attrs.get("epochs", "?")
        seconds = trial.user_attrs.get("seconds", 0.0)
        if trial.state is TrialState.PRUNED:
            last = (
                trial.intermediate_values.get(epochs, float("nan"))
                if isinstance(epochs, int)
                else float("nan")
            )
            outcome = f"[yellow]pruned[/yellow] at epoch {epochs} (AUC {last:.5f})"
        elif trial.state is TrialState.COMPLETE and trial.value is not None:
            outcome = f"valid AUC [bold]{trial.value:.5f}[/bold] in {epochs} epochs"
        else:
            outcome = f"[red]{trial.state.name.lower()}[/red]"
        best = ""
        if any(t.state is TrialState.COMPLETE for t in study.trials):
            best = f" | best {study.best_value:.5f} (trial {study.best_trial.number})"
        console.print(f"trial {trial.number + 1}/{self.total}: {outcome}, {seconds:.0f} s{best}")


def tune(
    model: Annotated[str, typer.Option(help="registry name: lr, fm, deepfm, xdeepfm, ...")],
    data: Annotated[Path, typer.Option(help="a data file, or a directory with train/valid/test files")],
    trials: Annotated[int, typer.Option(min=1, help="finished trials the study should hold")],
    timeout: Annotated[float | None, typer.Option(help="stop starting trials after S seconds")] = None,
    study: Annotated[Path | None, typer.Option(help="study folder (default: tune/MODEL)")] = None,
    config: Annotated[Path | None, typer.Option(help="base YAML config every trial starts from")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="base override: key=value")] = None,
    schema: Annotated[Path | None, typer.Option(help="feature schema YAML/JSON (default: detected)")] = None,
    startup_trials: Annotated[int | None, typer.Option(help="random trials before TPE")] = None,
    pruner_warmup: Annotated[int, typer.Option(min=0, help="epochs before a trial may be pruned")] = 2,
    out: Annotated[Path | None, typer.Option(help="also copy the best configuration here")] = None,
) -> None:
    """Search MODEL's hyper-parameters (Optuna TPE, pruning on validation AUC, resumable SQLite study)."""
    from training.cli import _require_training_extras

    _require_training_extras()
    from model.schema import FeatureSchema
    from training.config import ConfigError, load_config
    from training.readers.base import ReaderError
    from training.tune import TuneSettings, best_config, finished, run_search
    from training.tune_report import write_outputs

    folder = study or Path("tune") / model
    try:
        settings = TuneSettings(
            base=load_config(config, tuple(set_ or ()), model=model), data=data, study_dir=folder,
            trials=trials, timeout=timeout, schema=FeatureSchema.load(schema) if schema else None,
            startup_trials=startup_trials, pruner_warmup=pruner_warmup,
        )  # fmt: skip
        console.print(f"apprank tune: {model}, {trials} trials, study {folder}")
        result = run_search(settings, TrialPrinter(trials))
        best = best_config(result, settings.base)
    except (ConfigError, ReaderError, FileNotFoundError, ValueError) as error:
        err_console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    written = write_outputs(result, best, folder, str(data))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "best.yaml", out)
        written.append(out)
    summary = Table(title=f"apprank tune: {model}", show_header=False)
    summary.add_row("trials", f"{len(finished(result))} finished ({len(result.trials)} in the study)")
    summary.add_row("best", f"trial {result.best_trial.number}: validation AUC {result.best_value:.5f}")
    for key, value in result.best_trial.params.items():
        summary.add_row(f"  {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
    summary.add_row("wrote", "\n".join(str(path) for path in written))
    console.print(summary)


def register(app: typer.Typer) -> None:
    """Add ``apprank tune`` to the CLI."""
    app.command("tune")(tune)
