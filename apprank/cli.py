"""The ``apprank`` command: one entry point for training, serving and measurement.

Each package registers its own commands; their modules keep heavy imports (torch, onnxruntime) inside
the command functions, so ``apprank --help`` stays fast and the serving image runs without torch.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="CTR ranking for app stores.")

# module -> whether it may be absent (training commands are absent from a serving-only install)
_COMMAND_MODULES: tuple[tuple[str, bool], ...] = (
    ("training.cli", False),
    ("service.cli", False),
    ("service.events.cli", False),
    ("service.report.cli", False),
)


def _register() -> None:
    for module_name, optional in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if not optional:
                raise
            continue
        module.register(app)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _register()
    app()
