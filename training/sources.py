"""Where ``apprank train`` gets its rows: in memory, or streamed from a prepared dataset.

``--data DIR`` naming a prepared dataset streams it. Raw input whose files (bytes on disk) fit
``memory_budget`` keeps the in-memory fast path; larger raw input is first prepared, once, into
``prepared_cache/<cache key>`` (the key covers the data fingerprint, the schema hash and the settings
that change the content), and streamed from there. Under torchrun the first process of each node
prepares while the others wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
from rich.console import Console

from model.encoder import FeatureEncoder
from model.schema import FeatureSchema
from training.config import TrainConfig
from training.datasets import DatasetSplits, data_fingerprint, resolve_dataset
from training.distributed import DistContext
from training.prepared.loader import StreamEval, StreamTrain
from training.prepared.manifest import is_prepared
from training.prepared.reader import PreparedDataset
from training.prepared.writer import cache_key, prepare_dataset, raw_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Streamed:
    """A prepared dataset opened for this rank: the training stream and the evaluation splits."""

    dataset: PreparedDataset
    train: StreamTrain
    valid: StreamEval
    test: StreamEval | None

    @property
    def encoder(self) -> FeatureEncoder:
        return self.dataset.encoder

    @property
    def schema(self) -> FeatureSchema:
        return self.dataset.schema

    @property
    def fingerprint(self) -> str:
        return self.dataset.manifest.data_fingerprint

    @property
    def description(self) -> str:
        return f"prepared {self.dataset.root} ({self.dataset.manifest.source})"


def open_stream(
    root: Path, config: TrainConfig, context: DistContext | None, *, pin_memory: bool = False
) -> Streamed:
    """This rank's view of the prepared dataset at ``root``.

    Raises:
        ValueError: not a prepared dataset, or it lacks a train or valid split.
    """
    dataset = PreparedDataset(root)
    rank, world = (context.rank, context.world) if context is not None else (0, 1)
    train = StreamTrain(
        dataset, "train", batch_size=config.batch_size, seed=config.seed,
        buffer_rows=config.stream.shuffle_buffer_rows, rank=rank, world=world, pin_memory=pin_memory,
    )  # fmt: skip
    if not dataset.has("valid"):
        raise ValueError(f"{root}: a prepared dataset needs a valid split to train on")
    valid = StreamEval(dataset, "valid", rank=rank, world=world)
    test = StreamEval(dataset, "test", rank=rank, world=world) if dataset.has("test") else None
    return Streamed(dataset, train, valid, test)


def fits_in_memory(splits: DatasetSplits, config: TrainConfig) -> bool:
    """Whether the raw input (bytes on disk, all splits) is within ``memory_budget``."""
    return raw_size(splits) <= int(config.memory_budget)


def cached_prepare(
    splits: DatasetSplits, config: TrainConfig, context: DistContext | None, console: Console | None,
    encoder: FeatureEncoder | None = None,
) -> Path:  # fmt: skip
    """The prepared copy of ``splits`` in the cache, written first when missing."""
    folder = Path(config.prepared_cache) / cache_key(splits, config, encoder)
    if context is None or context.local_rank == 0:
        if is_prepared(folder):
            log.info("reusing the prepared dataset %s", folder)
        else:
            log.info(
                "raw input over memory_budget (%s bytes): preparing it into %s", config.memory_budget, folder
            )
            prepare_dataset(splits, folder, config, console=console, encoder=encoder)
    if context is not None:
        dist.barrier()
    return folder


def resolve_source(
    data_path: Path, schema: FeatureSchema | None, config: TrainConfig, context: DistContext | None,
    console: Console | None, encoder: FeatureEncoder | None = None,
) -> tuple[DatasetSplits | None, Path | None]:  # fmt: skip
    """(raw splits, None) for the in-memory path, or (None, prepared folder) for streaming."""
    if is_prepared(Path(data_path)):
        dataset_schema = PreparedDataset(Path(data_path)).schema
        if schema is not None and schema.content_hash() != dataset_schema.content_hash():
            raise ValueError(f"{data_path}: prepared under another schema than the one given")
        return None, Path(data_path)
    splits = resolve_dataset(data_path, schema, seed=config.seed)
    if fits_in_memory(splits, config):
        return splits, None
    return None, cached_prepare(splits, config, context, console, encoder)


__all__ = ["Streamed", "cached_prepare", "data_fingerprint", "open_stream", "resolve_source"]
