"""The raw Frappe log (``frappe.csv`` + ``meta.csv``) turned into CTR rows, the way frappe_ctr was built.

Every usage log is a positive. For each, ``negatives`` rows keep the user and the context and take an
app drawn uniformly from the apps that user never used. App attributes are joined from ``meta.csv`` by
``item`` (an app absent from it gets missing values; ``meta.csv`` itself writes ``unknown``, which is
kept as is, like frappe_ctr); ``cost`` is the app's own (taken from the logs). The rows are shuffled
and cut into train / valid / test (7:2:1 by default). Everything is deterministic for a seed.

The columns are exactly frappe_ctr's, so ``configs/schemas/frappe_ctr.yaml`` applies. The raw log is
small (96,203 lines): it is read whole, which the negative sampling needs anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from model.schema import FeatureKind, FeatureSchema
from training.readers.base import DEFAULT_CHUNK_ROWS, Chunk, ReaderError, StrArray, parse_numbers
from training.readers.delimited import TextFile

CONTEXT_COLUMNS = ("user", "daytime", "weekday", "isweekend", "homework", "weather", "country", "city")
META_COLUMNS = ("category", "downloads", "developer", "language", "price", "rating")
FRAPPE_CTR_COLUMNS = ("label", *CONTEXT_COLUMNS, "item", "cost", *META_COLUMNS)
SPLITS = ("train", "valid", "test")
Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class CodedColumn:
    """A text column stored as codes into its distinct values (a few MB instead of a few dozen)."""

    values: StrArray
    codes: npt.NDArray[np.int32]

    def rows(self, begin: int = 0, end: int | None = None) -> StrArray:
        """The text of rows [begin, end)."""
        out: StrArray = self.values[self.codes[begin:end]]
        return out


@dataclass(frozen=True)
class FrappeCtrTable:
    """All generated rows, shuffled: ``columns`` keyed by frappe_ctr column name, labels 0/1."""

    columns: dict[str, CodedColumn]
    labels: npt.NDArray[np.float32]

    @property
    def num_rows(self) -> int:
        return int(self.labels.size)

    def column(self, name: str) -> StrArray:
        """Every row of one column as text."""
        return self.columns[name].rows()


def _sample_negatives(
    users: npt.NDArray[np.int64], items: npt.NDArray[np.int64], num_items: int, count: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(log index, item code) of ``count`` negatives per log: apps the log's user never used."""
    used = np.zeros((int(users.max()) + 1, num_items), dtype=bool)
    used[users, items] = True
    if used.all(axis=1).any():
        raise ValueError("a Frappe user has used every app: no negative to sample")
    rng = np.random.default_rng(seed)
    log_of = np.repeat(np.arange(users.size), count)
    drawn = rng.integers(0, num_items, size=log_of.size)
    redraw = np.flatnonzero(used[users[log_of], drawn])
    while redraw.size:  # rejection sampling; each round keeps the draws that hit unused apps
        drawn[redraw] = rng.integers(0, num_items, size=redraw.size)
        redraw = redraw[used[users[log_of[redraw]], drawn[redraw]]]
    return log_of, drawn


def _per_item(num_items: int, codes: npt.NDArray[np.int64], values: StrArray) -> StrArray:
    """A value per item code (``""`` for items without one); the first value of a repeated code wins."""
    out = np.full(num_items, "", dtype=values.dtype if values.size else str)
    out[codes[::-1]] = values[::-1]  # with repeated indices the last write wins: reversed, the first
    return out


def _coded(text: StrArray, rows: npt.NDArray[np.int64]) -> CodedColumn:
    """``text[rows]`` as a coded column."""
    values, codes = np.unique(text, return_inverse=True)
    return CodedColumn(values, codes.astype(np.int32)[rows])


@functools.lru_cache(maxsize=2)
def build_frappe_ctr(directory: Path, seed: int = 2026, negatives: int = 2) -> FrappeCtrTable:
    """Generate the shuffled CTR rows from ``directory/frappe.csv`` and ``directory/meta.csv``.

    Raises:
        ReaderError: a file is missing, empty or lacks a needed column.
    """
    logs = TextFile(directory / "frappe.csv", delimiter="\t", quoting=False).read_columns(
        [*CONTEXT_COLUMNS, "item", "cost"]
    )
    meta = TextFile(directory / "meta.csv", delimiter="\t", quoting=False).read_columns(
        ["item", *META_COLUMNS]
    )
    item_names = np.unique(np.concatenate([logs["item"], meta["item"]]))
    user_codes = np.unique(logs["user"], return_inverse=True)[1]
    item_codes = np.searchsorted(item_names, logs["item"])
    log_of, drawn = _sample_negatives(user_codes, item_codes, item_names.size, negatives, seed)
    source = np.concatenate([np.arange(user_codes.size), log_of])
    items = np.concatenate([item_codes, drawn])
    order = np.random.default_rng([seed, 1]).permutation(source.size)
    source, items = source[order], items[order]
    columns = {name: _coded(logs[name], source) for name in CONTEXT_COLUMNS}
    columns["item"] = CodedColumn(item_names, items.astype(np.int32))
    columns["cost"] = CodedColumn(
        _per_item(item_names.size, item_codes, logs["cost"]), items.astype(np.int32)
    )
    meta_codes = np.searchsorted(item_names, meta["item"])
    for name in META_COLUMNS:
        columns[name] = CodedColumn(
            _per_item(item_names.size, meta_codes, meta[name]), items.astype(np.int32)
        )
    labels = (order < user_codes.size).astype(np.float32)
    for array in (labels, *(a for c in columns.values() for a in (c.values, c.codes))):
        array.flags.writeable = False  # shared by the split readers through the cache
    return FrappeCtrTable(columns, labels)


def split_bounds(num_rows: int, fractions: tuple[float, float, float]) -> dict[str, tuple[int, int]]:
    """Row ranges [start, stop) of train / valid / test for the given fractions."""
    total = sum(fractions)
    train_end = round(num_rows * fractions[0] / total)
    valid_end = train_end + round(num_rows * fractions[1] / total)
    return {"train": (0, train_end), "valid": (train_end, valid_end), "test": (valid_end, num_rows)}


class FrappeRawReader:
    """CTR rows generated from the raw Frappe directory (see the module docstring).

    Args:
        path: the directory holding ``frappe.csv`` and ``meta.csv``.
        schema: usually ``configs/schemas/frappe_ctr.yaml``; numeric fields read ``unknown`` as missing.
        split: ``train``, ``valid`` or ``test`` for that part of the shuffled rows, None for all rows.
        seed: drives the negatives and the shuffle.
        negatives: negatives per positive.
        fractions: the train / valid / test proportions.
    """

    def __init__(
        self,
        path: Path,
        schema: FeatureSchema,
        *,
        split: Split | None = None,
        seed: int = 2026,
        negatives: int = 2,
        fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.split = split
        self.seed = seed
        self.negatives = negatives
        self.fractions = fractions

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """Chunks of the (split's) rows; ``first_line`` counts rows of the split from 1."""
        table = build_frappe_ctr(self.path.resolve(), self.seed, self.negatives)
        absent = [spec.raw_column for spec in self.schema.fields if spec.raw_column not in table.columns]
        if absent or self.schema.label != "label":
            column = absent[0] if absent else self.schema.label
            raise ReaderError(self.path, "not a frappe_ctr column", column=column)
        start, stop = (
            (0, table.num_rows)
            if self.split is None
            else split_bounds(table.num_rows, self.fractions)[self.split]
        )
        if stop <= start:
            raise ReaderError(self.path, f"split {self.split} has no rows")
        for begin in range(start, stop, chunk_rows):
            end = min(begin + chunk_rows, stop)
            yield Chunk(self._columns(table, begin, end), table.labels[begin:end].copy(), begin - start + 1)

    def _columns(self, table: FrappeCtrTable, begin: int, end: int) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for spec in self.schema.fields:
            text = table.columns[spec.raw_column].rows(begin, end)
            if spec.kind is FeatureKind.NUMERIC:
                known = np.where(text == "unknown", "", text)
                columns[spec.name] = parse_numbers(
                    known, lambda row: begin + row + 1, self.path, spec.raw_column
                )
            else:
                columns[spec.name] = text
        return columns
