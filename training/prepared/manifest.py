"""``manifest.json`` of a prepared dataset: what is where, how many rows, and from which data.

Row groups are numbered globally per split, in shard order then row-group order: global index ``g`` is
what ranks are assigned by (``g % world == rank``, see ``reader``).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from training.prepared.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST

SPLITS = ("train", "valid", "test")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShardInfo(_Frozen):
    """One Parquet file: its path relative to the dataset folder and the rows of each row group."""

    file: str
    rows: int
    row_groups: list[int]


class SplitInfo(_Frozen):
    rows: int
    shards: list[ShardInfo]


class PreparedManifest(_Frozen):
    """Everything a reader needs besides the shards themselves.

    Attributes:
        data_fingerprint: ``training.datasets.data_fingerprint`` of the raw input.
        schema_hash: ``FeatureSchema.content_hash()`` of ``schema.yaml``.
        cache_key: fingerprint + schema hash + the settings that change the content (the cache folder name).
        hashed_fallback: fields whose vocabulary passed ``vocab_cap`` and were hashed instead.
    """

    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    created_at: datetime
    source: str
    data_fingerprint: str
    schema_hash: str
    cache_key: str
    row_group_rows: int
    shard_rows: int
    compression: str
    vocab_cap: int | None
    hashed_fallback: list[str] = Field(default_factory=list)
    splits: dict[str, SplitInfo]

    def split(self, name: str) -> SplitInfo:
        """The split, or a ValueError naming the ones present."""
        if name not in self.splits:
            raise ValueError(f"prepared dataset has no {name!r} split (has {sorted(self.splits)})")
        return self.splits[name]

    def save(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> PreparedManifest:
        """Read and check ``manifest.json``.

        Raises:
            ValueError: not a prepared dataset, or a format version this code does not read.
        """
        path = folder / MANIFEST
        if not path.is_file():
            raise ValueError(f"{folder}: not a prepared dataset (no {MANIFEST})")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT_NAME or data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format {data.get('format')!r} version {data.get('version')!r}, "
                f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
            )
        return cls.model_validate(data)


def is_prepared(path: Path) -> bool:
    """True when ``path`` is a folder holding a prepared dataset's manifest."""
    return path.is_dir() and (path / MANIFEST).is_file()
