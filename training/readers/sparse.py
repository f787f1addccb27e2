"""libsvm / libFM (``label idx:val ...``) and libffm (``label field:idx:val ...``) text files.

Both formats describe categorical data as one-hot indices. How a token becomes a value of a schema
field:

* libsvm: the i-th token of a row is field i of the schema (Frappe_x1 has exactly 10 per row), so every
  row must hold exactly one token per field; libffm: the ``field`` number is the field's position in the
  schema, fields a row does not mention are missing.
* categorical, hashed and multi fields: ``idx:1`` gives the value ``idx``; ``idx:0`` is an absent
  feature, i.e. missing; any other value ``v`` gives the distinct value ``idx:v`` (an index field cannot
  scale its embedding, so a different weight is treated as a different category).
* numeric fields: the value is ``val`` (the index is ignored).
* labels ``1`` / ``+1`` are positive, ``0`` / ``-1`` negative.

Lines are split in Python (the format needs it) and everything after that is vectorized per chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from model.schema import FeatureKind, FeatureSchema, FeatureSpec
from training.readers.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    ReaderError,
    StrArray,
    parse_labels,
    parse_numbers,
    undecodable_error,
)

IntArray = npt.NDArray[np.int64]


class _LineReader:
    """Reads a text file in blocks of lines, skipping blank lines but keeping their line numbers."""

    def __init__(self, path: Path, schema: FeatureSchema) -> None:
        self.path = Path(path)
        self.schema = schema

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` rows; raises ``ReaderError`` on the first malformed line."""
        if not self.path.is_file():
            raise ReaderError(self.path, "no such file")
        rows_seen, lines_before = 0, 0
        with self.path.open(encoding="utf-8") as handle:
            while block := _lines(handle, chunk_rows, self.path):
                tokens = [line.split() for line in block]
                kept = np.flatnonzero(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)))
                if kept.size:
                    lines = kept + lines_before + 1
                    yield self._parse([tokens[i] for i in kept.tolist()], lines)
                rows_seen += kept.size
                lines_before += len(block)
        if rows_seen == 0:
            raise ReaderError(self.path, "empty file")

    def _parse(self, rows: list[list[str]], lines: IntArray) -> Chunk:
        raise NotImplementedError

    def _labels(self, rows: list[list[str]], lines: IntArray) -> npt.NDArray[np.float32]:
        text = np.array([row[0] for row in rows], dtype=str)
        return parse_labels(text, lambda row: int(lines[row]), self.path, "label", signed=True)

    def _field_values(
        self, spec: FeatureSpec, index: StrArray, value: StrArray, lines: IntArray
    ) -> npt.NDArray[Any]:
        """One field's column from its index and value tokens (``""`` index = absent from the row)."""
        absent = index == ""
        numbers = np.where(absent, np.nan, 1.0)
        other = np.flatnonzero(~absent & (value != "1"))  # one-hot data: almost every value is "1"
        if other.size:
            numbers[other] = parse_numbers(
                value[other], lambda row: int(lines[other[row]]), self.path, spec.name
            )
        if spec.kind is FeatureKind.NUMERIC:
            return numbers
        weighted = np.strings.add(np.strings.add(index, ":"), value)
        out = np.where(numbers == 1.0, index, np.where((numbers == 0.0) | absent, "", weighted))
        return out.astype(str)


def _lines(handle: TextIO, count: int, path: Path) -> list[str]:
    """The next ``count`` lines (fewer at the end of the file)."""
    try:
        return list(itertools.islice(handle, count))
    except UnicodeDecodeError:
        raise undecodable_error(path) from None


def _split_token(tokens: StrArray) -> tuple[StrArray, StrArray, StrArray]:
    head, colon, tail = np.strings.partition(tokens, ":")
    return head.astype(str), colon.astype(str), tail.astype(str)


class LibsvmReader(_LineReader):
    """A libsvm / libFM file, token i of a row = field i of the schema (see the module docstring)."""

    def _parse(self, rows: list[list[str]], lines: IntArray) -> Chunk:
        fields = self.schema.fields
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) - 1
        wrong = np.flatnonzero(counts != len(fields))
        if wrong.size:
            self._wrong_count(int(counts[wrong[0]]), int(lines[wrong[0]]))
        labels = self._labels(rows, lines)
        grid = np.array(list(itertools.chain.from_iterable(rows)), dtype=str).reshape(len(rows), -1)[:, 1:]
        index, colon, value = _split_token(grid)
        bad = np.argwhere(colon != ":")
        if bad.size:
            row, position = int(bad[0][0]), int(bad[0][1])
            reason = f"expected idx:val, got {str(grid[row, position])!r}"
            raise ReaderError(self.path, reason, line=int(lines[row]), column=fields[position].name)
        columns = {
            spec.name: self._field_values(spec, index[:, i], value[:, i], lines)
            for i, spec in enumerate(fields)
        }
        return Chunk(columns, labels, int(lines[0]))

    def _wrong_count(self, got: int, line: int) -> None:
        expected = len(self.schema.fields)
        counts = f"expected {expected} features, got {got}"
        if got < expected:
            raise ReaderError(
                self.path, f"missing ({counts})", line=line, column=self.schema.fields[max(got, 0)].name
            )
        raise ReaderError(
            self.path, f"unexpected extra feature ({counts})", line=line, column=f"#{expected + 1}"
        )


class LibffmReader(_LineReader):
    """A libffm file: ``field`` numbers index the schema's fields (see the module docstring)."""

    def _parse(self, rows: list[list[str]], lines: IntArray) -> Chunk:
        labels = self._labels(rows, lines)
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) - 1
        row_of = np.repeat(np.arange(len(rows)), counts)
        flat = np.array(list(itertools.chain.from_iterable(row[1:] for row in rows)), dtype=str)
        field_text, colon, rest = _split_token(flat)
        index, colon2, value = _split_token(rest)
        field = self._field_numbers(field_text, (colon == ":") & (colon2 == ":"), flat, lines[row_of])
        columns: dict[str, Any] = {}
        for position, spec in enumerate(self.schema.fields):
            mask = field == position
            columns[spec.name] = self._gather(spec, row_of[mask], index[mask], value[mask], lines)
        return Chunk(columns, labels, int(lines[0]))

    def _field_numbers(self, text: StrArray, well_formed: Any, tokens: StrArray, lines: IntArray) -> IntArray:
        digits = well_formed & np.strings.isdigit(text)
        numbers = np.where(digits, text, "-1").astype(np.int64)
        bad = np.flatnonzero(~digits | (numbers >= len(self.schema.fields)))
        if bad.size:
            first = int(bad[0])
            reason = (
                f"expected field:idx:val with field < {len(self.schema.fields)}, got {str(tokens[first])!r}"
            )
            raise ReaderError(self.path, reason, line=int(lines[first]))
        return numbers

    def _gather(
        self, spec: FeatureSpec, rows: IntArray, index: StrArray, value: StrArray, lines: IntArray
    ) -> npt.NDArray[Any]:
        """Scatter one field's tokens into a column; repeated tokens are joined for multi fields only."""
        size = lines.size
        token_lines = lines[rows]
        values = self._field_values(spec, index, value, token_lines)
        repeated = np.flatnonzero(np.bincount(rows, minlength=size) > 1)
        if repeated.size and spec.kind is not FeatureKind.MULTI:
            line = int(lines[repeated[0]])
            raise ReaderError(self.path, "field given more than once", line=line, column=spec.name)
        if spec.kind is FeatureKind.NUMERIC:
            out_numbers = np.full(size, np.nan)
            out_numbers[rows] = values
            return out_numbers
        if repeated.size:
            joined = [""] * size
            for row, token in zip(rows.tolist(), values.tolist(), strict=True):
                joined[row] = f"{joined[row]}{spec.separator}{token}" if joined[row] else token
            return np.array(joined, dtype=str)
        out = np.full(size, "", dtype=values.dtype if values.size else str)
        out[rows] = values
        return out
