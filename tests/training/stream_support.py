"""Tiny learnable datasets for the prepared-dataset and streaming tests, written into tmp_path.

Every row has its own ``user`` value (``u<number>``), so a row is recognised by its encoded user index
and "every row exactly once" can be checked by counting indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.files import save_schema_yaml
from model.schema import FeatureSchema
from training.config import TrainConfig, load_config

SCHEMA = FeatureSchema.model_validate(
    {
        "name": "stream_tiny",
        "fields": [
            {"name": "user", "kind": "categorical", "source": "user"},
            {"name": "item", "kind": "categorical", "source": "item"},
            {"name": "score", "kind": "numeric", "source": "item", "transform": "standardize"},
            {"name": "tags", "kind": "multi", "source": "user", "separator": "|", "max_len": 3},
        ],
    }
)
SPLIT_ROWS = {"train": 3000, "valid": 700, "test": 500}


def _rows(rng: np.random.Generator, first: int, count: int) -> list[str]:
    item = rng.integers(0, 20, count)
    score = rng.normal(size=count)
    logit = (item - 10) / 3.0 + score
    label = (rng.random(count) < 1 / (1 + np.exp(-logit))).astype(int)
    tags = ["|".join(f"t{t}" for t in rng.choice(8, rng.integers(0, 4), replace=False)) for _ in range(count)]
    return [f"{label[k]},u{first + k},i{item[k]},{score[k]:.4f},{tags[k]}" for k in range(count)]


def write_dataset(folder: Path, split_rows: dict[str, int] | None = None, seed: int = 7) -> Path:
    """A folder with train/valid/test CSV files and schema.yaml; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    first = 0
    for split, count in (split_rows or SPLIT_ROWS).items():
        lines = ["label,user,item,score,tags", *_rows(rng, first, count)]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
        first += count
    save_schema_yaml(SCHEMA, folder / "schema.yaml")
    return folder


def write_single_file(path: Path, rows: int = 4000, seed: int = 7) -> Path:
    """One CSV file (the trainer or prepare splits it) with a schema beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["label,user,item,score,tags", *_rows(np.random.default_rng(seed), 0, rows)]
    path.write_text("\n".join(lines) + "\n")
    save_schema_yaml(SCHEMA, path.with_name(path.stem + ".schema.yaml"))
    return path


def small_config(*overrides: str) -> TrainConfig:
    """A fast DeepFM-D config with small row groups and shards (several of each on the tiny data)."""
    base = (
        "prepare.row_group_rows=256",
        "prepare.shard_rows=1024",
        "stream.shuffle_buffer_rows=1024",
        "batch_size=256",
        "epochs=2",
        "precision=fp32",
        "device=cpu",
        "threads=1",
        "chunk_rows=1000",
        "hidden_units=[16]",
        "embedding_dim=4",
        "serving_graphs=false",  # tests of reading and training: model.onnx only
    )
    return load_config(None, (*base, *overrides), model="deepfm")
