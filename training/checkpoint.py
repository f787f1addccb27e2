"""Step checkpoints: everything a training run needs to continue exactly where it stopped.

Every ``checkpoint_every`` steps rank 0 writes ``step-<global step>.pt`` (model, optimizer, scheduler,
the loop's position and history, the best weights so far, and every rank's random state), then
``latest.json`` naming it; both are written to a temporary name and renamed, so a run killed while
writing leaves the previous checkpoint intact. Resuming rebuilds the epoch's batch order from the
seed (in memory: the shuffling generator's state at the epoch's start) and skips the steps already
taken, so the resumed run continues the same run: same batches, same result.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.distributed import DistContext

log = logging.getLogger(__name__)
LATEST = "latest.json"
KEEP = 2


@dataclass
class LoopState:
    """Where the training loop is: the epoch in progress (1-based), the steps done in it, and what
    the loop carries from epoch to epoch."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    epoch_seconds: float = 0.0
    data_wait_s: float = 0.0  # of epoch_seconds, the time the loop waited for its next batch
    stale: int = 0
    history: dict[str, Any] = field(default_factory=dict)
    generator_state: torch.Tensor | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (see the module docstring for what each part is)."""

    loop: LoopState
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    best_state: dict[str, Any] | None
    rng: list[torch.Tensor]
    run: dict[str, Any]


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / LATEST).is_file()


def _gather_rng(context: DistContext | None) -> list[torch.Tensor]:
    state = torch.get_rng_state()
    if context is None:
        return [state]
    states: list[Any] = [None] * context.world
    dist.all_gather_object(states, state)
    return states


class Checkpointer:
    """Writes a checkpoint every ``every`` global steps into ``folder`` (rank 0 writes, all ranks join).

    ``run`` identifies the run (its settings and data); ``load`` refuses a checkpoint of another run.
    """

    def __init__(self, folder: Path, every: int, run: dict[str, Any], context: DistContext | None) -> None:
        self.folder, self.every, self.run, self.context = folder, every, run, context

    def due(self, global_step: int) -> bool:
        return global_step % self.every == 0

    def save(self, payload: dict[str, Any], loop: LoopState) -> None:
        """Write ``payload`` (model, optimizer, scheduler, best_state) and the loop state."""
        rng = _gather_rng(self.context)
        if self.context is not None and not self.context.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"step-{loop.global_step:09d}.pt"
        temporary = self.folder / f".{name}.tmp"
        torch.save(payload | {"loop": asdict(loop), "rng": rng, "run": self.run}, temporary)
        os.replace(temporary, self.folder / name)
        _write_json(
            self.folder / LATEST, {"file": name, "global_step": loop.global_step, "epoch": loop.epoch}
        )
        for old in sorted(self.folder.glob("step-*.pt"))[:-KEEP]:
            old.unlink()
        log.info("checkpoint %s (epoch %d, step %d)", self.folder / name, loop.epoch, loop.step)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value) + "\n")
    os.replace(temporary, path)


def load_checkpoint(folder: Path, run: dict[str, Any]) -> Checkpoint:
    """The latest checkpoint in ``folder``.

    Raises:
        ValueError: no checkpoint there, or one written by a run with other settings or data.
    """
    if not is_checkpoint_dir(folder):
        raise ValueError(f"{folder}: no step checkpoint ({LATEST} missing)")
    latest = json.loads((folder / LATEST).read_text())
    data = torch.load(folder / latest["file"], map_location="cpu", weights_only=True)
    changed = sorted(key for key in run.keys() | data["run"].keys() if run.get(key) != data["run"].get(key))
    if changed:
        raise ValueError(f"{folder}: the checkpoint is of another run (differs in {', '.join(changed)})")
    return Checkpoint(
        loop=LoopState(**data["loop"]),
        model=data["model"],
        optimizer=data["optimizer"],
        scheduler=data["scheduler"],
        best_state=data["best_state"],
        rng=data["rng"],
        run=data["run"],
    )
