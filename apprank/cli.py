"""The ``apprank`` command: one entry point for training, serving and measurement.

Each package registers its own commands; their modules keep heavy imports (torch, onnxruntime) inside
the command functions, so ``apprank --help`` stays fast and the serving image runs without torch.
"""

from __future__ import annotations

import importlib
import logging

import typer

# Modules with a ``register(app)`` function, in the order their commands are listed.
COMMAND_MODULES: tuple[str, ...] = (
    "training.cli",
    "training.tune_cli",
    "simulation.synth_cli",
    "service.cli",
    "pipeline.events_cli",
    "pipeline.report_cli",
    "pipeline.models_cli",
    "pipeline.retrain_cli",
    "apprank.run",
    "simulation.simulate",
)
# The serving image installs only the `serve` extra: commands that need the training extras
# (torch, pandas, pyarrow...) are left out there instead of breaking `apprank --help`.
TRAINING_ONLY = frozenset(
    {
        "training.cli",
        "training.tune_cli",
        "simulation.synth_cli",
        "apprank.run",
        "simulation.simulate",
        "pipeline.retrain_cli",
    }
)
log = logging.getLogger(__name__)


def build_app() -> typer.Typer:
    """The CLI with every installed package's commands registered."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, help="CTR ranking for app stores.")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            if module_name not in TRAINING_ONLY:
                raise
            log.debug("%s unavailable (%s): install the `train` extra for its commands", module_name, error)
            continue
        module.register(app)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_app()()
