"""Data-parallel training with torch.distributed: gloo on CPU, NCCL on GPUs, launched by torchrun.

``apprank train --nproc N`` re-runs itself under ``torchrun --standalone --nproc-per-node N``; with
``--nnodes M --node-rank R --master-addr HOST --master-port P`` each of M machines runs N processes that
meet in torchrun's rendezvous on HOST (training/launch.py builds the torchrun command line). Every
rank builds the same model, and one step sees ``batch_size`` rows over all ranks, as in
single-process training: DistributedDataParallel averages the gradients. In memory every rank reads
and encodes the same data (the encoder fit is deterministic) and takes its slice of each global
batch, and rank 0 evaluates and broadcasts the figures; a prepared dataset is streamed, each rank
reading only its own row groups, and evaluated by every rank on its part, gathered (training/prepared).
Either way every rank takes the same early-stopping decision, and rank 0 alone writes the bundle.
Before training, the ranks check that they were all given the same run (training/agreement.py).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from training.launch import Topology, torchrun_arguments


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_launched_process() -> bool:
    """True inside a process started by torchrun (it sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(device: torch.device) -> DistContext | None:
    """Join the process group torchrun prepared; None when running as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        torch.cuda.set_device(local_rank)  # "cuda" then means this process's own GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def shutdown(context: DistContext | None) -> None:
    if context is not None and dist.is_initialized():
        dist.barrier()
        gc.collect()  # what still holds the group (a dropped DDP wrapper's reducer) goes first
        dist.destroy_process_group()


def broadcast_from_main(value: Any, context: DistContext | None) -> Any:
    """Rank 0's ``value`` on every rank (identity for a single process)."""
    if context is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(topology: Topology, argv: list[str]) -> int:
    """Run ``apprank <argv>`` in the processes of ``topology`` under torchrun; returns the exit code."""
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(torchrun_arguments(topology, argv))
    try:
        run(args)  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - torchrun already logged the failing rank's traceback
        return 1
    return 0


def gather_concat(values: torch.Tensor, context: DistContext | None) -> torch.Tensor:
    """Every rank's 1-D ``values`` concatenated in rank order, on every rank (CPU; identity alone).

    Ranks may hold different lengths: each pads to the longest before the all-gather.
    """
    if context is None:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    local = values.to(device) if device is not None else values
    sizes = [torch.zeros(1, dtype=torch.int64, device=local.device) for _ in range(context.world)]
    dist.all_gather(sizes, torch.tensor([local.numel()], dtype=torch.int64, device=local.device))
    longest = max(int(s.item()) for s in sizes)
    padded = torch.zeros(longest, dtype=local.dtype, device=local.device)
    padded[: local.numel()] = local
    parts = [torch.empty_like(padded) for _ in range(context.world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(size.item())].cpu() for part, size in zip(parts, sizes, strict=True)])
