"""``apprank prepare``: fit the encoder in one streaming pass, then write the encoded rows as shards.

Memory is bounded by the chunk size (one raw chunk and less than one row group of encoded rows per
split are held at a time) and, while fitting, by the number of distinct values (capped by
``vocab_cap``); never by the number of rows. The folder is written under a temporary name and renamed
into place when complete, so a reader never sees half a dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress

from model.encoder import FeatureEncoder
from model.files import save_schema_yaml
from model.fitting import EncoderFitter
from training.config import PrepareConfig, TrainConfig
from training.data import limit_rows
from training.datasets import DatasetSplits, data_fingerprint
from training.prepared.format import ENCODER, SCHEMA, Block, arrow_schema, block_to_table, encode_block
from training.prepared.manifest import SPLITS, PreparedManifest, ShardInfo, SplitInfo
from training.prepared.progress import row_progress
from training.readers.base import Chunk

log = logging.getLogger(__name__)
TRAIN, VALID, TEST = 0, 1, 2
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def row_splits(
    first_row: int, rows: int, seed: int, valid_fraction: float, test_fraction: float
) -> npt.NDArray[np.int8]:
    """Split of each row of a single-file input (0 train, 1 valid, 2 test), from its row number alone.

    A counter-based hash (splitmix64 of seed and row number) rather than a permutation: the same row
    lands in the same split whatever the chunk size, in one pass, without holding every row.
    """
    with np.errstate(over="ignore"):
        x = np.arange(first_row, first_row + rows, dtype=np.uint64) + np.uint64(seed % (1 << 64)) * np.uint64(
            _MIX[0]
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX[1])
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX[2])
        x ^= x >> np.uint64(31)
    draw = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out = np.zeros(rows, dtype=np.int8)
    out[draw < valid_fraction + test_fraction] = TEST
    out[draw < valid_fraction] = VALID
    return out


def cache_key(splits: DatasetSplits, config: TrainConfig, encoder: FeatureEncoder | None = None) -> str:
    """Names the prepared content: data fingerprint, schema hash, every setting that changes it, and
    the encoder when one is imposed (a warm start keeps its bundle's encoder)."""
    settings = {
        "encoder": None
        if encoder is None
        else hashlib.sha256(json.dumps(encoder.state_dict()).encode()).hexdigest(),
        "prepare": config.prepare.model_dump(mode="json"),
        "max_rows": config.max_rows,
        "split": None
        if splits.valid is not None
        else [config.seed, config.valid_fraction, config.test_fraction],
    }
    digest = hashlib.sha256()
    digest.update(data_fingerprint(splits).encode())
    digest.update(splits.schema.content_hash().encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:24]


class SplitWriter:
    """Writes one split's encoded rows as shards of whole row groups (the last one may be short)."""

    def __init__(self, root: Path, split: str, encoder: FeatureEncoder, settings: PrepareConfig) -> None:
        self.root, self.split, self.settings = root, split, settings
        self.layout = encoder.layout
        self.schema = arrow_schema(self.layout)
        self.groups_per_shard = max(1, -(-settings.shard_rows // settings.row_group_rows))
        self.pending: list[Block] = []
        self.pending_rows = 0
        self.shards: list[ShardInfo] = []
        self._writer: pq.ParquetWriter | None = None
        self._groups: list[int] = []

    def add(self, block: Block) -> None:
        if not len(block):
            return
        self.pending.append(block)
        self.pending_rows += len(block)
        size = self.settings.row_group_rows
        if self.pending_rows < size:
            return
        joined = Block.concat(self.pending)
        full = len(joined) // size * size
        for start in range(0, full, size):
            self._write_group(joined.take(slice(start, start + size)))
        rest = joined.take(slice(full, len(joined)))
        self.pending, self.pending_rows = ([rest] if len(rest) else []), len(rest)

    def _write_group(self, block: Block) -> None:
        if self._writer is None:
            name = f"{self.split}/part-{len(self.shards):05d}.parquet"
            (self.root / self.split).mkdir(exist_ok=True)
            codec = None if self.settings.compression == "none" else self.settings.compression
            self._writer = pq.ParquetWriter(self.root / name, self.schema, compression=codec)
            self._name = name
        self._writer.write_table(block_to_table(block, self.layout, self.schema), row_group_size=len(block))
        self._groups.append(len(block))
        if len(self._groups) == self.groups_per_shard:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self.shards.append(ShardInfo(file=self._name, rows=sum(self._groups), row_groups=self._groups))
        self._writer, self._groups = None, []

    def close(self) -> SplitInfo:
        if self.pending_rows:
            self._write_group(Block.concat(self.pending))
            self.pending, self.pending_rows = [], 0
        self._close_shard()
        return SplitInfo(rows=sum(s.rows for s in self.shards), shards=self.shards)


def _select(chunk: Chunk, mask: npt.NDArray[np.bool_]) -> Chunk:
    return Chunk({k: v[mask] for k, v in chunk.columns.items()}, chunk.labels[mask], chunk.first_line)


class _Preparer:
    """The two passes over the raw input (fit, then encode and write)."""

    def __init__(self, splits: DatasetSplits, config: TrainConfig, progress: Progress) -> None:
        self.splits, self.config, self.progress = splits, config, progress

    def _train_chunks(self) -> Iterator[Chunk]:
        return limit_rows(self.splits.train.chunks(self.config.chunk_rows), self.config.max_rows)

    def _assigned(self) -> Iterator[tuple[Chunk, npt.NDArray[np.int8] | None]]:
        """Train chunks with each row's split when the input is a single file (else None)."""
        first = 0
        c = self.config
        for chunk in self._train_chunks():
            if self.splits.valid is not None:
                yield chunk, None
                continue
            yield chunk, row_splits(first, chunk.num_rows, c.seed, c.valid_fraction, c.test_fraction)
            first += chunk.num_rows

    def fit(self) -> tuple[FeatureEncoder, list[str], int]:
        """The encoder fitted on the training rows, the fields hashed by the cap, and the rows read."""
        fitter = EncoderFitter(self.splits.schema, vocab_cap=self.config.prepare.vocab_cap)
        task = self.progress.add_task("prepare: fit encoder", total=None)
        rows = 0
        for chunk, split in self._assigned():
            fitter.update((chunk if split is None else _select(chunk, split == TRAIN)).columns)
            rows += chunk.num_rows
            self.progress.advance(task, chunk.num_rows)
        self.progress.remove_task(task)
        return fitter.finish(), sorted(fitter.hashed_fallback), rows

    def write(self, encoder: FeatureEncoder, root: Path, total: int | None) -> dict[str, SplitInfo]:
        writers = {name: SplitWriter(root, name, encoder, self.config.prepare) for name in SPLITS}
        task = self.progress.add_task("prepare: encode + write", total=total)
        for chunk, split in self._assigned():
            block = self._encode(encoder, chunk)
            if split is None:
                writers["train"].add(block)
            else:
                for code, name in enumerate(SPLITS):
                    writers[name].add(block.take(np.flatnonzero(split == code)))
            self.progress.advance(task, chunk.num_rows)
        for name in ("valid", "test"):
            reader = self.splits.named().get(name)
            for chunk in reader.chunks(self.config.chunk_rows) if reader is not None else ():
                writers[name].add(self._encode(encoder, chunk))
                self.progress.advance(task, chunk.num_rows)
        self.progress.remove_task(task)
        infos = {name: writer.close() for name, writer in writers.items()}
        return {name: info for name, info in infos.items() if info.rows}

    @staticmethod
    def _encode(encoder: FeatureEncoder, chunk: Chunk) -> Block:
        encoded = encoder.transform(chunk.columns, chunk.num_rows)
        return encode_block(encoded, chunk.labels, encoder.layout)


def _estimated_total(splits: DatasetSplits, train_rows: int) -> int | None:
    """Rows of every split, estimated from the train rows and the files' sizes (for the time left)."""
    sizes = {name: _size(reader.path) for name, reader in splits.named().items()}
    if splits.valid is None or not sizes.get("train"):
        return train_rows
    return int(train_rows * sum(sizes.values()) / sizes["train"])


def raw_size(splits: DatasetSplits) -> int:
    """Bytes on disk of every split's input."""
    return sum(_size(reader.path) for reader in splits.named().values())


def _size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size
    )


def prepare_dataset(
    splits: DatasetSplits,
    out: Path,
    config: TrainConfig,
    *,
    console: Console | None = None,
    encoder: FeatureEncoder | None = None,
) -> PreparedManifest:
    """Fit (unless ``encoder`` is given), encode and write ``splits`` as a prepared dataset at ``out``.

    Raises:
        ReaderError: a malformed input row (the message names file, line and column).
        FileExistsError: ``out`` exists.
        ValueError: no training rows.
    """
    if out.exists():
        raise FileExistsError(f"{out} exists: prepare writes a new folder")
    console = console or Console(stderr=True)
    imposed = encoder
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the dataset
    try:
        with row_progress(console, disable=not console.is_terminal) as progress:
            preparer = _Preparer(splits, config, progress)
            hashed: list[str] = []
            if encoder is None:
                encoder, hashed, rows = preparer.fit()
            else:
                rows = sum(c.num_rows for c in preparer._train_chunks())
            infos = preparer.write(encoder, staging, _estimated_total(splits, rows))
        if "train" not in infos:
            raise ValueError(f"{splits.description}: no training rows")
        manifest = _manifest(splits, config, infos, hashed, imposed)
        encoder.save(staging / ENCODER)
        save_schema_yaml(splits.schema, staging / SCHEMA)
        manifest.save(staging)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("prepared %s: %s", out, ", ".join(f"{k} {v.rows:,} rows" for k, v in manifest.splits.items()))
    if hashed:
        log.warning(
            "vocabulary past vocab_cap=%s, hashed instead: %s", config.prepare.vocab_cap, ", ".join(hashed)
        )
    return manifest


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; another process that finished first wins (same content)."""
    try:
        staging.rename(out)
    except OSError:
        if not (out / "manifest.json").is_file():
            raise
        log.info("%s was prepared meanwhile by another process: keeping that one", out)


def _manifest(
    splits: DatasetSplits,
    config: TrainConfig,
    infos: dict[str, SplitInfo],
    hashed: list[str],
    imposed: FeatureEncoder | None,
) -> PreparedManifest:
    settings = config.prepare
    return PreparedManifest(
        created_at=datetime.now(UTC),
        source=splits.description,
        data_fingerprint=data_fingerprint(splits),
        schema_hash=splits.schema.content_hash(),
        cache_key=cache_key(splits, config, imposed),
        row_group_rows=settings.row_group_rows,
        shard_rows=settings.shard_rows,
        compression=settings.compression,
        vocab_cap=settings.vocab_cap,
        hashed_fallback=hashed,
        splits=infos,
    )
