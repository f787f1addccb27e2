"""Search-space declarations for hyper-parameter tuning: plain data, no optimizer library imported.

Each model's parameter class declares its space next to its fields (``model.nets.params``), keyed by
the dotted ``TrainConfig`` path a value is written to (``optimizer.lr``, ``params.dropout``...).
``training.tune`` turns each dimension into the matching Optuna suggestion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Scalar = str | int | float | bool


@dataclass(frozen=True)
class FloatRange:
    """A float in [low, high], sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """An integer in [low, high] by ``step``."""

    low: int
    high: int
    step: int = 1


@dataclass(frozen=True)
class Choice:
    """One of a few values (unordered)."""

    options: tuple[Scalar, ...]


@dataclass(frozen=True)
class LayerStack:
    """Layers of equal width: ``min_layers`` to ``max_layers`` layers, each one of ``widths`` units.

    Written as a tuple of ints (``hidden_units``, ``cin_layer_units``); 0 layers is the empty tuple.
    """

    min_layers: int
    max_layers: int
    widths: tuple[int, ...]


Dimension = FloatRange | IntRange | Choice | LayerStack
SearchSpace = Mapping[str, Dimension]

# What every model trained by Adam shares: step size, batch size and the L2 on the embedding tables
# (coupled weight decay: strong values pay off on frappe_ctr, whose rare ids overfit first).
TRAINING_SPACE: SearchSpace = {
    "optimizer.lr": FloatRange(2e-4, 5e-3, log=True),
    "batch_size": Choice((1024, 2048, 4096, 8192)),
    "embedding_l2": FloatRange(1e-3, 1.0, log=True),
}
# LR and FM learn from near-zero weights: larger steps, and a lighter L2 (it decays every row each step).
SHALLOW_SPACE: SearchSpace = {
    "optimizer.lr": FloatRange(1e-3, 5e-2, log=True),
    "batch_size": Choice((1024, 2048, 4096, 8192)),
    "embedding_l2": FloatRange(1e-6, 1e-2, log=True),
}
