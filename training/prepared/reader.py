"""Reading a prepared dataset: which row groups a rank reads, in which order, and in how many steps.

The invariants, kept here:

* Row groups are numbered globally per split (``manifest``); rank ``r`` of ``w`` owns the row groups
  with ``index % w == r``, every epoch, so a node can keep only its own shards on local disk.
* Each epoch a rank visits its row groups in a permutation seeded by ``(seed, epoch, rank)`` and draws
  batches through a bounded shuffle buffer: every row of the split is read exactly once per epoch
  over all ranks, and the order depends only on the seed (a resumed run replays it).
* Every rank runs ``steps_per_epoch`` steps, computed from the manifest alone: ``ceil(max rows of a
  rank / local batch)``. Batches are full until a rank's rows run out; a rank with fewer rows then
  yields empty blocks for the remaining steps (the trainer gives them a masked row), so DDP never
  waits on a rank that has stopped and no row is repeated or dropped. ``step_rows`` is the number of
  real rows in a global step, the same on every rank, which the loss is normalised by.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from model.encoder import FeatureEncoder
from model.schema import FeatureSchema
from training.prepared.format import ENCODER, SCHEMA, Block, table_to_block
from training.prepared.manifest import PreparedManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowGroup:
    """One row group: its global index in the split, its shard file and index there, its rows."""

    index: int
    shard: str
    group: int
    rows: int


@dataclass
class ReadStats:
    """What one rank read in one pass (dist's tests count these)."""

    split: str
    rank: int
    world: int
    row_groups: list[int] = field(default_factory=list)
    rows: int = 0


class PreparedDataset:
    """A prepared dataset folder: manifest, schema, encoder, and row-group reads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = PreparedManifest.load(self.root)
        self.schema = FeatureSchema.load(self.root / SCHEMA)
        if self.schema.content_hash() != self.manifest.schema_hash:
            raise ValueError(f"{self.root}: schema.yaml does not match the manifest's schema hash")
        self.encoder = FeatureEncoder.load(self.schema, self.root / ENCODER)

    def has(self, split: str) -> bool:
        return split in self.manifest.splits

    def rows(self, split: str) -> int:
        return self.manifest.split(split).rows

    def row_groups(self, split: str) -> list[RowGroup]:
        """Every row group of ``split``, in global order."""
        groups: list[RowGroup] = []
        for shard in self.manifest.split(split).shards:
            for number, rows in enumerate(shard.row_groups):
                groups.append(RowGroup(len(groups), shard.file, number, rows))
        return groups

    def reader(self) -> GroupReader:
        """A reader with its own open files (one per thread that reads)."""
        return GroupReader(self)


class GroupReader:
    """Reads row groups, keeping each shard's file open (not shared between threads)."""

    def __init__(self, dataset: PreparedDataset) -> None:
        self.dataset = dataset
        self._files: dict[str, pq.ParquetFile] = {}

    def read(self, group: RowGroup) -> Block:
        handle = self._files.get(group.shard)
        if handle is None:
            handle = self._files[group.shard] = pq.ParquetFile(self.dataset.root / group.shard)
        block = table_to_block(handle.read_row_group(group.group), self.dataset.encoder.layout)
        if len(block) != group.rows:
            raise ValueError(
                f"{group.shard}: row group {group.group} has {len(block)} rows, manifest {group.rows}"
            )
        return block


def assigned(groups: list[RowGroup], rank: int, world: int) -> list[RowGroup]:
    """The row groups rank ``rank`` of ``world`` owns (global index mod world)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return [g for g in groups if g.index % world == rank]


def rows_per_rank(groups: list[RowGroup], world: int) -> list[int]:
    return [sum(g.rows for g in assigned(groups, rank, world)) for rank in range(world)]


def local_batch_size(batch_size: int, world: int) -> int:
    """Each rank's share of a global batch of ``batch_size`` rows."""
    return max(1, batch_size // world)


def steps_per_epoch(groups: list[RowGroup], local_batch: int, world: int) -> int:
    """Steps every rank runs per epoch: enough for the rank with the most rows."""
    return max(1, math.ceil(max(rows_per_rank(groups, world)) / local_batch))


def step_rows(per_rank: list[int], step: int, local_batch: int) -> int:
    """Real rows over all ranks in step ``step`` (0-based) of an epoch."""
    return sum(min(local_batch, max(0, rows - step * local_batch)) for rows in per_rank)


def epoch_order(groups: list[RowGroup], seed: int, epoch: int, rank: int, world: int) -> list[RowGroup]:
    """This rank's row groups in the epoch's seeded permutation."""
    own = assigned(groups, rank, world)
    order = np.random.default_rng([seed, epoch, rank]).permutation(len(own))
    return [own[i] for i in order]


def _shuffled(
    reader: GroupReader, order: list[RowGroup], rng: np.random.Generator, buffer_rows: int, batch: int,
    stats: ReadStats,
) -> Iterator[Block]:  # fmt: skip
    """Full batches through a buffer of ``buffer_rows`` rows (the last batch may be short).

    Once full, the buffer is shuffled and batches are drawn until half of it is left; the rest stays
    to mix with the next row groups.
    """
    capacity = max(buffer_rows, 2 * batch)
    keep = capacity // 2 if buffer_rows else 0
    pool: list[Block] = []
    pooled = 0
    for position, group in enumerate(order):
        block = reader.read(group)
        stats.row_groups.append(group.index)
        stats.rows += len(block)
        pool.append(block)
        pooled += len(block)
        last = position == len(order) - 1
        if pooled < capacity and not last:
            continue
        joined = Block.concat(pool)
        if buffer_rows:
            joined = joined.take(rng.permutation(len(joined)))
        limit = len(joined) if last else len(joined) - keep
        drawn = limit // batch * batch if not last else len(joined)
        for start in range(0, drawn, batch):
            yield joined.take(slice(start, min(start + batch, drawn)))
        rest = joined.take(slice(drawn, len(joined)))
        pool, pooled = ([rest] if len(rest) else []), len(rest)


def epoch_batches(
    dataset: PreparedDataset, split: str, *, epoch: int, seed: int, rank: int, world: int, local_batch: int,
    buffer_rows: int, stats: ReadStats | None = None,
) -> Iterator[Block]:  # fmt: skip
    """Exactly ``steps_per_epoch`` blocks for this rank: its rows, shuffled, then empty blocks."""
    groups = dataset.row_groups(split)
    steps = steps_per_epoch(groups, local_batch, world)
    stats = stats if stats is not None else ReadStats(split, rank, world)
    order = epoch_order(groups, seed, epoch, rank, world)
    rng = np.random.default_rng([seed, epoch, rank, 1])
    produced = 0
    for block in _shuffled(dataset.reader(), order, rng, buffer_rows, local_batch, stats):
        produced += 1
        yield block
    empty = Block.empty(dataset.encoder.layout)
    for _ in range(steps - produced):
        yield empty
    log.info(
        "rank %d/%d %s epoch %d: read %d row groups, %d rows, %d steps; row groups read: %s",
        rank, world, split, epoch, len(stats.row_groups), stats.rows, steps,
        ",".join(str(index) for index in stats.row_groups),
    )  # fmt: skip


def eval_blocks(
    dataset: PreparedDataset, split: str, *, rank: int, world: int, batch: int, stats: ReadStats | None = None
) -> Iterator[Block]:
    """This rank's rows of ``split`` in file order, in blocks of at most ``batch`` rows (no padding)."""
    stats = stats if stats is not None else ReadStats(split, rank, world)
    reader = dataset.reader()
    for group in assigned(dataset.row_groups(split), rank, world):
        block = reader.read(group)
        stats.row_groups.append(group.index)
        stats.rows += len(block)
        for start in range(0, len(block), batch):
            yield block.take(slice(start, start + batch))
