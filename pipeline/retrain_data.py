"""The retrain's data, streamed from the event store: the window as a prepared dataset, the held-out
days scored by both versions.

Export (one read of the store, ``EventStore.training_pages`` decoded a column at a time by
``pipeline.store_columns``; two passes over the rows, one block in memory at a time):

1. *fit*: the training rows of the window grow the serving encoder's vocabularies
   (``pipeline.retrain_warm.grow_encoder``: known ids keep their index, new ones are appended), while
   every row read is spilled to disk as decoded columns (``pipeline.row_spill.Spilled``);
2. *encode*: the same rows again, read back from the spill, encoded with the grown encoder and written
   as a prepared dataset (``training.prepared.writer.SplitWriter``: row groups of compact dtypes,
   shards, a manifest), the valid and test rows picked by ``row_splits`` from the row number and the
   seed, like ``apprank prepare`` splits a single file. Only the rows of the train split are fitted on.

So memory holds one block of raw rows, less than one row group per split and the vocabularies being
counted (bounded by ``vocab_cap``), never the window. The folder is written aside and renamed into
place.

Evaluation: the held-out days, streamed block by block, each block encoded by each version's own
encoder and scored by its ONNX graph. What is kept is the scores and labels (4 bytes a row per
version, and 4 for the labels), which the exact AUC needs: the held-out days, not the window.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model.bundle import Bundle
from model.encoder import FeatureEncoder
from model.files import save_schema_yaml
from model.schema import FeatureSchema
from pipeline.export import labeled_chunks
from pipeline.row_spill import RowSource
from service.events.store import EventStore
from training.config import TrainConfig
from training.metrics import evaluate_predictions
from training.prepared.format import ENCODER, SCHEMA, encode_block
from training.prepared.manifest import SPLITS, PreparedManifest, SplitInfo
from training.prepared.writer import TRAIN, SplitWriter, row_splits
from training.readers.base import Chunk

log = logging.getLogger(__name__)
DEFAULT_BLOCK_ROWS = 50_000
# Rows per ONNX Runtime call when scoring: its memory arena grows to the largest batch it has run and
# keeps it, so a whole block per call would hold hundreds of MB per session for the rest of the step.
SCORE_ROWS = 4_096


@dataclass(frozen=True)
class Source:
    """Where a retrain's rows come from: the store, the experiment and the [start, end) of the days."""

    store: EventStore
    experiment: str
    start_ts: float
    end_ts: float
    block_rows: int = DEFAULT_BLOCK_ROWS

    def chunks(self, schema: FeatureSchema) -> Iterator[Chunk]:
        start, end = self.start_ts, self.end_ts
        return labeled_chunks(self.store, self.experiment, start, end, schema, self.block_rows)

    @property
    def description(self) -> str:
        start, end = (_day(t) for t in (self.start_ts, self.end_ts))
        return f"event store: experiment {self.experiment}, {start} to {end} (exclusive)"


def _day(ts: float) -> str:
    try:
        return str(datetime.fromtimestamp(ts, UTC).date())
    except (OverflowError, ValueError, OSError):
        return "the start" if ts < 0 else "the end"


def _with_splits(chunks: Iterator[Chunk], config: TrainConfig) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Each chunk with its rows' split (0 train, 1 valid, 2 test) from their row numbers."""
    first = 0
    for chunk in chunks:
        c = config
        yield chunk, row_splits(first, chunk.num_rows, c.seed, c.valid_fraction, c.test_fraction)
        first += chunk.num_rows


def training_rows(source: RowSource, schema: FeatureSchema, config: TrainConfig) -> Iterator[Chunk]:
    """The rows of the train split only (what the vocabulary grows from), chunk by chunk."""
    for chunk, split in _with_splits(source.chunks(schema), config):
        keep = split == TRAIN
        yield Chunk({k: v[keep] for k, v in chunk.columns.items()}, chunk.labels[keep], chunk.first_line)


@dataclass(frozen=True)
class Written:
    """What the encode pass wrote: rows and downloads per split."""

    manifest: PreparedManifest
    rows: int
    positives: int


def write_prepared(source: RowSource, encoder: FeatureEncoder, config: TrainConfig, out: Path) -> Written:
    """Encode the rows of ``source`` with ``encoder`` into a prepared dataset at ``out`` (replaced).

    Raises:
        ValueError: no rows landed in the train or the valid split (too few rows to train on).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    digest = hashlib.sha256(source.description.encode())
    rows = positives = 0
    try:
        writers = {name: SplitWriter(staging, name, encoder, config.prepare) for name in SPLITS}
        for chunk, split in _with_splits(source.chunks(encoder.schema), config):
            encoded = encoder.transform(chunk.columns, chunk.num_rows)
            block = encode_block(encoded, chunk.labels, encoder.layout)
            for code, name in enumerate(SPLITS):
                writers[name].add(block.take(np.flatnonzero(split == code)))
            digest.update(block.labels.tobytes())
            rows += chunk.num_rows
            positives += int(chunk.labels.sum())
            log.info("export: %d rows encoded", rows)
        infos = {name: writer.close() for name, writer in writers.items()}
        infos = {name: info for name, info in infos.items() if info.rows}
        for needed in ("train", "valid"):
            if needed not in infos:
                raise ValueError(f"{source.description}: {rows} rows, none in the {needed} split")
        digest.update(str(rows).encode())
        manifest = _manifest(source, encoder.schema, config, infos, digest.hexdigest()[:24])
        encoder.save(staging / ENCODER)
        save_schema_yaml(encoder.schema, staging / SCHEMA)
        manifest.save(staging)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Written(manifest, rows, positives)


def _manifest(
    source: RowSource,
    schema: FeatureSchema,
    config: TrainConfig,
    infos: dict[str, SplitInfo],
    fingerprint: str,
) -> PreparedManifest:
    settings = config.prepare
    return PreparedManifest(
        created_at=datetime.now(UTC),
        source=source.description,
        data_fingerprint=fingerprint,
        schema_hash=schema.content_hash(),
        cache_key=fingerprint,
        row_group_rows=settings.row_group_rows,
        shard_rows=settings.shard_rows,
        compression=settings.compression,
        vocab_cap=settings.vocab_cap,
        splits=infos,
    )


@dataclass(frozen=True)
class HeldOut:
    """The held-out figures of each bundle scored, and the rows and downloads they cover."""

    metrics: list[dict[str, float]]
    rows: int
    positives: int


def evaluate_streamed(bundles: Sequence[Bundle], source: Source) -> HeldOut:
    """Score the rows of ``source`` with every bundle (its own encoder, its ONNX graph through ONNX
    Runtime, as the service runs it), block by block; AUC, logloss and calibration of each."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(b.onnx_path), providers=["CPUExecutionProvider"]) for b in bundles]
    scores: list[list[np.ndarray]] = [[] for _ in bundles]
    labels: list[np.ndarray] = []
    schema = bundles[0].schema
    for chunk in source.chunks(schema):
        labels.append(chunk.labels)
        for bundle, session, out in zip(bundles, sessions, scores, strict=True):
            encoded = bundle.encoder.transform(chunk.columns, chunk.num_rows)
            names = [i.name for i in session.get_inputs()]
            for start in range(0, chunk.num_rows, SCORE_ROWS):
                feeds = {
                    name: np.ascontiguousarray(encoded[name][start : start + SCORE_ROWS]) for name in names
                }
                (ctr,) = session.run(["ctr"], feeds)
                out.append(np.asarray(ctr, dtype=np.float32))
    if not labels:
        return HeldOut([{"rows": 0.0} for _ in bundles], 0, 0)
    all_labels = np.concatenate(labels)
    metrics = [evaluate_predictions(all_labels, np.concatenate(parts)) for parts in scores]
    return HeldOut(metrics, int(all_labels.shape[0]), int(all_labels.sum()))
