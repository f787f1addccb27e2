"""The on-disk layout of a prepared dataset: column names and compact dtypes, and blocks of decoded rows.

A prepared dataset is a folder::

    manifest.json      splits -> shards -> rows per row group, fingerprint, settings (see ``manifest``)
    encoder.json       the fitted ``FeatureEncoder`` state
    schema.yaml        the ``FeatureSchema`` it was fitted under
    train/part-00000.parquet, valid/..., test/...

Why Parquet rather than Arrow IPC: row groups are Parquet's native unit (the footer lists the rows of
each and any one can be read alone), which is exactly the unit ranks are assigned and shuffled by; the
columns are compressed (dictionary + run-length encoding suits low-cardinality index columns, then
zstd), which matters when a billion rows are read from network storage every epoch; and every tool
(DuckDB, pandas, Spark) can inspect the shards. Arrow IPC decodes faster (memory-mapped, zero copy),
but uncompressed it is several times larger on disk, and decoding happens in the background reader
while the model trains, where its cost is hidden.

Columns, one per model input so that each compresses on its own: ``idx.<field>`` int32 (index fields,
0 = missing, 1 = out of vocabulary), ``val.<field>`` float32 (continuous fields), ``bag.<field>.<k>``
int32 (slot k of a multi-valued field) and ``label`` int8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch import Tensor

from model.encoder import Encoded, InputLayout, InputRole
from model.nets.blocks import ModelBatch

FORMAT_NAME = "apprank-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ENCODER = "encoder.json"
SCHEMA = "schema.yaml"
LABEL = "label"
INT32_MAX = np.iinfo(np.int32).max


def index_column(name: str) -> str:
    return f"idx.{name}"


def value_column(name: str) -> str:
    return f"val.{name}"


def bag_columns(name: str, max_len: int) -> list[str]:
    return [f"bag.{name}.{k}" for k in range(max_len)]


def arrow_schema(layout: InputLayout) -> pa.Schema:
    """The Parquet columns of a layout, in layout order, then the label."""
    fields: list[pa.Field] = []
    for spec in layout.fields:
        if spec.role is InputRole.INDEX:
            fields.append(pa.field(index_column(spec.name), pa.int32(), nullable=False))
        elif spec.role is InputRole.VALUE:
            fields.append(pa.field(value_column(spec.name), pa.float32(), nullable=False))
        else:
            fields += [pa.field(c, pa.int32(), nullable=False) for c in bag_columns(spec.name, spec.max_len)]
    fields.append(pa.field(LABEL, pa.int8(), nullable=False))
    return pa.schema(fields)


@dataclass(frozen=True)
class Block:
    """Encoded rows in compact dtypes: ``idx`` [N, Fi] int32, ``val`` [N, Fv] float32, bags [N, L] int32,
    ``labels`` [N] int8."""

    idx: npt.NDArray[np.int32]
    val: npt.NDArray[np.float32]
    bags: tuple[npt.NDArray[np.int32], ...]
    labels: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: npt.NDArray[np.int64] | slice) -> Block:
        """The given rows (an index array or a slice), as a new block."""
        return Block(self.idx[rows], self.val[rows], tuple(b[rows] for b in self.bags), self.labels[rows])

    def copy(self) -> Block:
        """A block owning its arrays (a slice keeps its source's buffers alive)."""
        return Block(self.idx.copy(), self.val.copy(), tuple(b.copy() for b in self.bags), self.labels.copy())

    def to_torch(self) -> tuple[ModelBatch, Tensor]:
        """The batch the nets take (int64 indices, as in memory) and float32 labels."""
        batch = ModelBatch(
            torch.from_numpy(self.idx.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(self.val)),
            tuple(torch.from_numpy(b.astype(np.int64)) for b in self.bags),
        )
        return batch, torch.from_numpy(self.labels.astype(np.float32))

    @staticmethod
    def concat(blocks: list[Block]) -> Block:
        if len(blocks) == 1:
            return blocks[0]
        return Block(
            np.concatenate([b.idx for b in blocks]),
            np.concatenate([b.val for b in blocks]),
            tuple(np.concatenate(parts) for parts in zip(*(b.bags for b in blocks), strict=True)),
            np.concatenate([b.labels for b in blocks]),
        )

    @staticmethod
    def empty(layout: InputLayout) -> Block:
        """A block of no rows, shaped for ``layout``."""
        bags = tuple(np.zeros((0, s.max_len), np.int32) for s in layout.of_role(InputRole.BAG))
        return Block(
            np.zeros((0, len(layout.of_role(InputRole.INDEX))), np.int32),
            np.zeros((0, len(layout.of_role(InputRole.VALUE))), np.float32),
            bags,
            np.zeros(0, np.int8),
        )


def _int32(values: npt.NDArray[Any], name: str) -> npt.NDArray[np.int32]:
    if values.size and int(values.max()) > INT32_MAX:
        raise ValueError(f"{name}: index {int(values.max())} does not fit int32")
    return values.astype(np.int32)


def encode_block(encoded: Encoded, labels: npt.NDArray[Any], layout: InputLayout) -> Block:
    """The encoder's per-field output (int64 / float32) as a compact block."""
    rows = int(labels.shape[0])
    idx, val, bags = layout.stacked(encoded, rows)
    names = [s.name for s in layout.of_role(InputRole.BAG)]
    return Block(
        _int32(idx, "index fields"),
        val.astype(np.float32),
        tuple(_int32(b, n) for b, n in zip(bags, names, strict=True)),
        np.asarray(labels).astype(np.int8),
    )


def block_to_table(block: Block, layout: InputLayout, schema: pa.Schema) -> pa.Table:
    """One Arrow column per Parquet column (see the module docstring)."""
    arrays: list[npt.NDArray[Any]] = []
    index = iter(range(block.idx.shape[1]))
    value = iter(range(block.val.shape[1]))
    bags = iter(block.bags)
    for spec in layout.fields:
        if spec.role is InputRole.INDEX:
            arrays.append(block.idx[:, next(index)])
        elif spec.role is InputRole.VALUE:
            arrays.append(block.val[:, next(value)])
        else:
            bag = next(bags)
            arrays += [bag[:, k] for k in range(spec.max_len)]
    arrays.append(block.labels)
    return pa.Table.from_arrays([pa.array(a) for a in arrays], schema=schema)


def _column(table: pa.Table, name: str) -> npt.NDArray[Any]:
    values: npt.NDArray[Any] = table.column(name).to_numpy()
    return values


def table_to_block(table: pa.Table, layout: InputLayout) -> Block:
    """Decode a row group read from a shard."""
    rows = table.num_rows
    index = [_column(table, index_column(s.name)) for s in layout.of_role(InputRole.INDEX)]
    value = [_column(table, value_column(s.name)) for s in layout.of_role(InputRole.VALUE)]
    bags = tuple(
        np.stack([_column(table, c) for c in bag_columns(s.name, s.max_len)], axis=1)
        for s in layout.of_role(InputRole.BAG)
    )
    return Block(
        np.stack(index, axis=1) if index else np.zeros((rows, 0), np.int32),
        np.stack(value, axis=1) if value else np.zeros((rows, 0), np.float32),
        bags,
        _column(table, LABEL),
    )
