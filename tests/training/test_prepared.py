"""Prepared datasets: shards decode to the in-memory encoding, epochs cover every row once per rank
split, the order is seeded, uneven ranks get the same step count, the vocabulary cap hashes, and a
malformed row stops ``apprank prepare`` with file, line and column."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from apprank.cli import build_app
from model.encoder import HashedState
from tests.training.stream_support import small_config, write_dataset, write_single_file
from training.datasets import resolve_dataset
from training.pipeline import prepare
from training.prepared.format import Block
from training.prepared.reader import (
    PreparedDataset,
    ReadStats,
    assigned,
    epoch_batches,
    eval_blocks,
    rows_per_rank,
    step_rows,
    steps_per_epoch,
)
from training.prepared.writer import TEST, TRAIN, VALID, prepare_dataset, row_splits


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("prepared")
    splits = resolve_dataset(write_dataset(root / "raw"))
    prepare_dataset(splits, root / "ds", small_config())
    return PreparedDataset(root / "ds")


def _all(dataset: PreparedDataset, split: str) -> Block:
    return Block.concat(list(eval_blocks(dataset, split, rank=0, world=1, batch=10_000)))


def test_shards_decode_to_the_in_memory_encoding(tmp_path: Path, prepared: PreparedDataset) -> None:
    splits = resolve_dataset(write_dataset(tmp_path / "raw"))
    encoder, memory = prepare(splits, small_config(), None)
    assert prepared.encoder.state_dict() == encoder.state_dict()
    for name, data in (("train", memory.train), ("valid", memory.valid), ("test", memory.test)):
        assert data is not None
        block = _all(prepared, name)
        assert block.idx.dtype == np.int32 and block.val.dtype == np.float32 and block.labels.dtype == np.int8
        assert np.array_equal(block.idx.astype(np.int64), data.idx.numpy())
        assert np.array_equal(block.val, data.val.numpy())
        assert len(block.bags) == 1 and np.array_equal(block.bags[0].astype(np.int64), data.bags[0].numpy())
        assert np.array_equal(block.labels.astype(np.float32), data.labels.numpy())


def test_manifest_describes_the_shards(prepared: PreparedDataset) -> None:
    manifest = prepared.manifest
    assert {name: info.rows for name, info in manifest.splits.items()} == {
        "train": 3000,
        "valid": 700,
        "test": 500,
    }
    train = manifest.splits["train"]
    assert [s.rows for s in train.shards] == [1024, 1024, 952]
    assert all(rows == 256 for s in train.shards for rows in s.row_groups[:-1])
    assert len(prepared.row_groups("train")) == 12 and manifest.hashed_fallback == []
    assert len(manifest.data_fingerprint) == 64 and manifest.schema_hash == prepared.schema.content_hash()


def _users(block: Block) -> list[int]:
    return [int(u) for u in block.idx[:, 0]]  # the user field: one value per row


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_an_epoch_reads_every_row_once_over_the_ranks(prepared: PreparedDataset, world: int) -> None:
    groups = prepared.row_groups("train")
    local = 64
    steps = steps_per_epoch(groups, local, world)
    per_rank = rows_per_rank(groups, world)
    seen: Counter[int] = Counter()
    blocks_by_rank = []
    for rank in range(world):
        stats = ReadStats("train", rank, world)
        blocks = list(
            epoch_batches(prepared, "train", epoch=1, seed=3, rank=rank, world=world, local_batch=local,
                          buffer_rows=512, stats=stats)
        )  # fmt: skip
        assert len(blocks) == steps  # the same step count on every rank, however uneven
        assert sorted(stats.row_groups) == [g.index for g in assigned(groups, rank, world)]
        assert stats.rows == per_rank[rank] == sum(len(b) for b in blocks)
        for block in blocks:
            seen.update(_users(block))
        blocks_by_rank.append(blocks)
    assert sorted(seen) == sorted(_users(_all(prepared, "train"))) and set(seen.values()) == {1}
    for step in range(steps):
        assert sum(len(blocks[step]) for blocks in blocks_by_rank) == step_rows(per_rank, step, local)
        assert all(len(blocks[step]) in (0, local) for blocks in blocks_by_rank) or step >= steps - 2


def test_uneven_ranks_pad_with_empty_batches_at_the_end(prepared: PreparedDataset) -> None:
    groups = prepared.row_groups("train")
    per_rank = rows_per_rank(groups, 5)
    assert len(set(per_rank)) > 1  # 12 row groups, the last one short, over 5 ranks
    short = int(np.argmin(per_rank))
    blocks = list(
        epoch_batches(prepared, "train", epoch=1, seed=3, rank=short, world=5, local_batch=128, buffer_rows=0)
    )
    sizes = [len(b) for b in blocks]
    real = -(-per_rank[short] // 128)
    assert sizes[real:] == [0] * (len(sizes) - real) and len(sizes) > real
    assert sum(sizes) == per_rank[short]


def test_the_order_is_seeded_per_epoch(prepared: PreparedDataset) -> None:
    def order(epoch: int, seed: int) -> list[int]:
        blocks = epoch_batches(
            prepared, "train", epoch=epoch, seed=seed, rank=0, world=1, local_batch=100, buffer_rows=1024
        )
        return [u for b in blocks for u in _users(b)]

    first = order(1, 3)
    assert order(1, 3) == first
    assert order(2, 3) != first and order(1, 4) != first
    assert sorted(order(2, 3)) == sorted(first)
    assert first != sorted(first)  # shuffled within and across row groups


def test_a_vocabulary_past_its_cap_falls_back_to_hashing(tmp_path: Path) -> None:
    splits = resolve_dataset(write_dataset(tmp_path / "raw"))
    manifest = prepare_dataset(splits, tmp_path / "ds", small_config("prepare.vocab_cap=50"))
    assert manifest.hashed_fallback == ["user"] and manifest.vocab_cap == 50
    dataset = PreparedDataset(tmp_path / "ds")
    state = dataset.encoder.states["user"]
    assert isinstance(state, HashedState) and state.num_buckets == 50
    assert not isinstance(dataset.encoder.states["item"], HashedState)  # 20 values: under the cap
    users = _all(dataset, "train").idx[:, 0]
    assert users.min() >= 2 and users.max() < 52 and len(np.unique(users)) > 40


def test_a_single_file_is_split_by_row_number(tmp_path: Path) -> None:
    path = write_single_file(tmp_path / "all.csv", rows=4000)
    config = small_config()
    manifest = prepare_dataset(resolve_dataset(path), tmp_path / "ds", config)
    expected = row_splits(0, 4000, config.seed, config.valid_fraction, config.test_fraction)
    counts = {
        name: int((expected == code).sum())
        for name, code in (("train", TRAIN), ("valid", VALID), ("test", TEST))
    }
    assert {name: info.rows for name, info in manifest.splits.items()} == counts
    assert 300 < counts["valid"] < 500 and 300 < counts["test"] < 500
    chunked = np.concatenate(
        [row_splits(start, 1000, config.seed, 0.1, 0.1) for start in range(0, 4000, 1000)]
    )
    assert np.array_equal(chunked, expected)  # independent of the chunk size
    dataset = PreparedDataset(tmp_path / "ds")
    users = {name: set(_users(_all(dataset, name))) for name in ("train", "valid")}
    assert not users["train"] & users["valid"] - {1}  # valid users are unseen: out of vocabulary


def test_a_malformed_row_stops_prepare_with_file_line_and_column(tmp_path: Path) -> None:
    raw = write_dataset(tmp_path / "raw")
    lines = (raw / "train.csv").read_text().splitlines()
    lines[1233] = "1,u9999,i3,not-a-number,t1"  # line 1234 of the file
    (raw / "train.csv").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(build_app(), ["prepare", "--data", str(raw), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2
    message = "".join(result.output.split())  # rich wraps long lines
    assert "train.csv:1234:columnscore:notanumber:'not-a-number'" in message
    assert not (tmp_path / "ds").exists() and [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_prepare_refuses_to_overwrite(tmp_path: Path, prepared: PreparedDataset) -> None:
    result = CliRunner().invoke(
        build_app(), ["prepare", "--data", str(write_dataset(tmp_path / "raw")), "--out", str(prepared.root)]
    )
    assert result.exit_code == 2 and "exists" in result.output
