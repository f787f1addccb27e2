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
    "training.synth_cli",
    "service.cli",
    "service.events.cli",
    "service.report.cli",
    "apprank.run",
    "apprank.simulate",
)


def build_app() -> typer.Typer:
    """The CLI with every package's commands registered."""
    app = typer.Typer(no_args_is_help=True, add_completion=False, help="CTR ranking for app stores.")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)
    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    build_app()()
