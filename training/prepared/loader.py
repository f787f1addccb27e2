"""A prepared dataset as this rank's torch batches (training) and as gathered scores (evaluation).

``StreamTrain`` is what ``Trainer.fit`` takes instead of in-memory ``EncodedData``: each epoch is
``steps`` batches of ``local_batch`` rows (see ``reader`` for the invariants). A rank whose rows have run
out trains on masked filler rows (copies of real rows it read this epoch, mask 0), so that its forward
and backward pass still reach every parameter and DDP's gradient all-reduce is met by every rank; real
rows rather than zeros because batch normalisation updates its running statistics from whatever it
sees, and needs two rows at least (a batch of one real row gets one filler row). The loss of a step is
the sum over the real rows of all ranks divided by their number (``step_rows``, known on every rank
from the manifest), so filler rows never weigh in and a step is the same mean as in single-process
training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.nets.blocks import ModelBatch
from training.data import EncodedData
from training.prepared.format import Block
from training.prepared.reader import (
    PreparedDataset,
    ReadStats,
    assigned,
    epoch_batches,
    eval_blocks,
    local_batch_size,
    rows_per_rank,
    step_rows,
    steps_per_epoch,
)

MIN_ROWS = 2  # batch normalisation in training mode needs two rows


@dataclass(frozen=True)
class StepBatch:
    """One step's input on this rank: the batch, its labels, the row mask (None: all real rows), and
    the number of real rows of the whole step over all ranks."""

    batch: ModelBatch
    labels: Tensor
    mask: Tensor | None
    step_rows: int


def block_data(block: Block) -> EncodedData:
    """A decoded block as in-memory ``EncodedData`` (int64 indices, float32 labels)."""
    batch, labels = block.to_torch()
    return EncodedData(batch.idx, batch.val, batch.bags, labels)


class StreamTrain:
    """The training split of a prepared dataset, as rank ``rank`` of ``world`` streams it."""

    def __init__(
        self, dataset: PreparedDataset, split: str, *, batch_size: int, seed: int, buffer_rows: int,
        rank: int = 0, world: int = 1, pin_memory: bool = False,
    ) -> None:  # fmt: skip
        self.dataset, self.split, self.seed, self.buffer_rows = dataset, split, seed, buffer_rows
        self.rank, self.world, self.pin_memory = rank, world, pin_memory
        groups = dataset.row_groups(split)
        self.local_batch = local_batch_size(batch_size, world)
        self.steps = steps_per_epoch(groups, self.local_batch, world)
        self.per_rank = rows_per_rank(groups, world)
        self.stats: list[ReadStats] = []  # one per epoch started, what this rank read

    def __len__(self) -> int:
        """Rows of the split (all ranks)."""
        return sum(self.per_rank)

    def blocks(self, epoch: int) -> Iterator[Block]:
        """This rank's ``steps`` blocks of epoch ``epoch`` (1-based), decoded but not yet tensors."""
        stats = ReadStats(self.split, self.rank, self.world)
        self.stats.append(stats)
        return epoch_batches(
            self.dataset, self.split, epoch=epoch, seed=self.seed, rank=self.rank, world=self.world,
            local_batch=self.local_batch, buffer_rows=self.buffer_rows, stats=stats,
        )  # fmt: skip

    def step_batch(self, step: int, block: Block, filler: Block | None) -> StepBatch:
        """Step ``step`` (0-based) of an epoch from its block; one of fewer than 2 rows is completed
        with masked ``filler`` rows (zeros when the rank has read no row)."""
        mask = None
        if len(block) < MIN_ROWS:
            extra = filler if filler is not None else _zero_rows(block, MIN_ROWS)
            if len(block):
                extra = extra.take(slice(0, MIN_ROWS - len(block)))
            mask = torch.cat([torch.ones(len(block)), torch.zeros(len(extra))])
            block = Block.concat([block, extra])
        batch, labels = block.to_torch()
        if self.pin_memory:
            batch = ModelBatch(
                batch.idx.pin_memory(), batch.val.pin_memory(), tuple(b.pin_memory() for b in batch.bags)
            )
            labels = labels.pin_memory()
        return StepBatch(batch, labels, mask, step_rows(self.per_rank, step, self.local_batch))

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[StepBatch]:
        """Epoch ``epoch``'s step inputs, the first ``skip`` steps read but left out (a resumed run)."""
        filler: Block | None = None
        for step, block in enumerate(self.blocks(epoch)):
            if filler is None and len(block) >= MIN_ROWS:
                filler = block.take(slice(0, self.local_batch)).copy()
            if step >= skip:
                yield self.step_batch(step, block, filler)


def _zero_rows(like: Block, rows: int) -> Block:
    """All-missing rows (index 0, value 0, empty bags, label 0) shaped like ``like``."""
    return Block(
        np.zeros((rows, like.idx.shape[1]), np.int32),
        np.zeros((rows, like.val.shape[1]), np.float32),
        tuple(np.zeros((rows, b.shape[1]), np.int32) for b in like.bags),
        np.zeros(rows, np.int8),
    )


class StreamEval:
    """A split of a prepared dataset for evaluation: this rank's rows in order, scores gathered after."""

    def __init__(self, dataset: PreparedDataset, split: str, *, rank: int = 0, world: int = 1) -> None:
        self.dataset, self.split, self.rank, self.world = dataset, split, rank, world
        self.stats: list[ReadStats] = []

    def __len__(self) -> int:
        return self.dataset.rows(self.split)

    def local_rows(self) -> int:
        """Rows of the split this rank scores (its own row groups)."""
        return sum(g.rows for g in assigned(self.dataset.row_groups(self.split), self.rank, self.world))

    def batches(self, batch_size: int) -> Iterator[EncodedData]:
        stats = ReadStats(self.split, self.rank, self.world)
        self.stats.append(stats)
        for block in eval_blocks(
            self.dataset, self.split, rank=self.rank, world=self.world, batch=batch_size, stats=stats
        ):
            yield block_data(block)

    def head(self, rows: int) -> EncodedData:
        """The split's first ``rows`` rows (from its first row group: the export's parity sample)."""
        first = self.dataset.row_groups(self.split)[0]
        block = self.dataset.reader().read(first)
        return block_data(block.take(slice(0, rows)))
