"""The reader interface every data source implements, and the checks all readers share.

A reader turns one file (or one raw dataset) into ``Chunk``s of canonical columns: categorical, hashed
and multi-valued fields as numpy unicode arrays (``""`` = missing), numeric fields as float64 (NaN =
missing), labels as float32 0/1. Those are what ``model.fitting.EncoderFitter.update`` and
``model.encoder.FeatureEncoder.transform`` consume. A malformed input stops with a ``ReaderError`` that
names the file, the line and the column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from model.schema import FeatureKind, FeatureSchema

StrArray = npt.NDArray[np.str_]
FloatArray = npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.float32]

DEFAULT_CHUNK_ROWS = 200_000
LABEL_TEXT = ("0", "1", "0.0", "1.0")
SIGNED_LABEL_TEXT = ("-1", "+1", "-1.0", "+1.0")


@dataclass(frozen=True)
class Chunk:
    """A block of consecutive rows of one file.

    Attributes:
        columns: one array per schema field present, keyed by field name (``FeatureSpec.name``).
        labels: float32 ``[n]``, 0.0 or 1.0.
        first_line: 1-based line (or row) number of the chunk's first row in its file.
    """

    columns: dict[str, npt.NDArray[Any]]
    labels: LabelArray
    first_line: int

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])


class ReaderError(ValueError):
    """A malformed input: ``"<file>:<line>: column <name>: <reason>"``, line and column when known."""

    def __init__(
        self, file: Path, reason: str, *, line: int | None = None, column: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.reason = reason
        where = str(file) if line is None else f"{file}:{line}"
        what = reason if column is None else f"column {column}: {reason}"
        super().__init__(f"{where}: {what}")


class Reader(Protocol):
    """Anything that yields the rows of one data file as chunks of canonical columns."""

    schema: FeatureSchema
    path: Path

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """Consecutive chunks of at most ``chunk_rows`` rows; raises ``ReaderError`` on bad input."""
        ...


def read_all(reader: Reader) -> Chunk:
    """All rows of ``reader`` as one chunk (``first_line=1``).

    Raises:
        ReaderError: the input is malformed or holds no rows.
    """
    parts = list(reader.chunks())
    if not parts:
        raise ReaderError(reader.path, "no data rows")
    if len(parts) == 1:
        return Chunk(parts[0].columns, parts[0].labels, 1)
    names = parts[0].columns.keys()
    columns = {name: np.concatenate([part.columns[name] for part in parts]) for name in names}
    return Chunk(columns, np.concatenate([part.labels for part in parts]), 1)


def parse_labels(
    text: StrArray, locate: Callable[[int], int], file: Path, column: str, *, signed: bool = False
) -> LabelArray:
    """Labels from their text: ``0``/``1`` (``0.0``/``1.0``; with ``signed``, ``-1`` is 0 and ``+1`` is 1).

    Args:
        text: the label column as strings.
        locate: maps a row index of ``text`` to its line number in ``file`` (for the error message).
        file, column: named in the error.
        signed: also accept libsvm's ``-1`` / ``+1``.

    Raises:
        ReaderError: a label is none of the accepted forms.
    """
    positive = np.isin(text, ("1", "1.0", "+1", "+1.0") if signed else ("1", "1.0"))
    allowed = LABEL_TEXT + SIGNED_LABEL_TEXT if signed else LABEL_TEXT
    valid = positive | np.isin(text, allowed)
    if not valid.all():
        row = int(np.argmin(valid))
        accepted = "0/1 or -1/+1" if signed else "0 or 1"
        reason = f"bad label {str(text[row])!r} (expected {accepted})"
        raise ReaderError(file, reason, line=locate(row), column=column)
    return positive.astype(np.float32)


def parse_numbers(text: StrArray, locate: Callable[[int], int], file: Path, column: str) -> FloatArray:
    """Float64 values of a numeric column given as text; ``""`` is missing (NaN).

    Raises:
        ReaderError: a value is not a number (the first one, with its line).
    """
    filled = np.where(text == "", "nan", text)
    try:
        return filled.astype(np.float64)
    except ValueError:
        pass
    for row, value in enumerate(filled.tolist()):
        try:
            float(value)
        except ValueError:
            raise ReaderError(file, f"not a number: {value!r}", line=locate(row), column=column) from None
    raise AssertionError("unreachable: astype failed but every value parsed")  # pragma: no cover


def field_columns(schema: FeatureSchema, present: set[str]) -> list[tuple[str, str, bool]]:
    """(field name, raw column, is numeric) for each schema field whose raw column is in ``present``."""
    return [
        (spec.name, spec.raw_column, spec.kind is FeatureKind.NUMERIC)
        for spec in schema.fields
        if spec.raw_column in present
    ]


def undecodable_error(path: Path) -> ReaderError:
    """The error for a file that is not UTF-8, naming the first line that does not decode."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                reason = f"not UTF-8 text ({error.reason} at byte {error.start + 1} of the line)"
                return ReaderError(path, reason, line=number)
    return ReaderError(path, "not UTF-8 text")
