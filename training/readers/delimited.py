"""CSV and TSV files described by a schema, read in chunks with pyarrow's streaming CSV parser.

The fast path never loops over rows in Python: pyarrow parses blocks of the file into string columns,
numpy converts them. Only when something is wrong does a second, exact pass with Python's ``csv``
module run, to find the physical line (quoted fields may hold separators and newlines, blank lines are
skipped) and the column of the fault.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv

from model.schema import FeatureSchema
from training.readers.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    FloatArray,
    ReaderError,
    StrArray,
    field_columns,
    parse_labels,
    parse_numbers,
    undecodable_error,
)

logger = logging.getLogger(__name__)

BLOCK_BYTES = 4 << 20


def rebatch(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup record batches into tables of exactly ``rows`` rows (the last one may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def strings(column: pa.ChunkedArray | pa.Array) -> StrArray:
    """A pyarrow string column as a numpy unicode array (nulls become ``""``).

    Dictionary-encoding first converts each distinct value once: CTR columns repeat a few values many
    times, which makes this about twice as fast as converting every row.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pa_compute.dictionary_encode(pa_compute.fill_null(array, ""))
    values: Any = encoded.dictionary.to_numpy(zero_copy_only=False)
    out: StrArray = np.asarray(values, dtype=str)[encoded.indices.to_numpy()]
    return out


def arrow_numbers(column: pa.ChunkedArray | pa.Array) -> FloatArray | None:
    """Float64 values of a string column via Arrow's (fast) parser, ``""`` = NaN; None if any value fails.

    The caller then falls back to ``parse_numbers``, which accepts what numpy accepts and otherwise
    reports the first bad value with its line.
    """
    blank = pa_compute.equal(column, "")
    try:
        values = pa_compute.cast(
            pa_compute.if_else(blank, pa.scalar(None, pa.string()), column), pa.float64()
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out: FloatArray = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    return out


class TextFile:
    """A delimited text file, schema-free: its header, its rows as string tables, exact line lookup.

    Args:
        path: the file.
        delimiter: ``,`` for CSV, ``\\t`` for TSV.
        column_names: for files without a header line, the name of every column in order.
        quoting: honour ``"``-quoted fields (off for raw TSV logs whose text holds stray quotes).
    """

    def __init__(
        self,
        path: Path,
        *,
        delimiter: str = ",",
        column_names: Sequence[str] | None = None,
        quoting: bool = True,
    ) -> None:
        self.path = Path(path)
        self.delimiter = delimiter
        self.column_names = tuple(column_names) if column_names is not None else None
        self.quoting = quoting

    @property
    def header_lines(self) -> int:
        return 0 if self.column_names is not None else 1

    def header(self) -> tuple[str, ...]:
        """The column names: from the first non-blank line, or ``column_names`` for header-less files."""
        if not self.path.is_file():
            raise ReaderError(self.path, "no such file")
        for _, fields in self.rows():
            return self.column_names if self.column_names is not None else tuple(fields)
        raise ReaderError(self.path, "empty file")

    def require(self, names: tuple[str, ...], columns: Sequence[str], what: str) -> None:
        """Raise naming the first of ``columns`` that is not among ``names``."""
        for column in columns:
            if column not in names:
                line = None if self.column_names is not None else 1
                raise ReaderError(self.path, f"{what} not in the header", line=line, column=column)

    def tables(self, names: tuple[str, ...], include: Sequence[str], chunk_rows: int) -> Iterator[pa.Table]:
        """The ``include`` columns as string tables of ``chunk_rows`` rows (the last may be shorter)."""
        read = pa_csv.ReadOptions(
            block_size=BLOCK_BYTES, column_names=list(names) if self.column_names is not None else None
        )
        parse = pa_csv.ParseOptions(delimiter=self.delimiter, quote_char='"' if self.quoting else False)
        convert = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(include, pa.string()),
            include_columns=list(include),
            strings_can_be_null=False,
        )
        try:
            yield from rebatch(pa_csv.open_csv(self.path, read, parse, convert), chunk_rows)
        except pa.ArrowInvalid as error:
            raise self._diagnose(names, error) from None

    def read_columns(self, columns: Sequence[str]) -> dict[str, StrArray]:
        """Every row of the named columns, as unicode arrays (for small files: logs, lookup tables)."""
        names = self.header()
        self.require(names, columns, "column")
        parts = list(self.tables(names, columns, 1 << 40))
        if not parts:
            raise ReaderError(self.path, "no data rows (header only)")
        return {column: strings(parts[0].column(column)) for column in columns}

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(first physical line, fields) of every non-blank row, header included, exactly as parsed."""
        quoting: Literal[0, 3] = csv.QUOTE_MINIMAL if self.quoting else csv.QUOTE_NONE
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle, delimiter=self.delimiter, quoting=quoting)
                previous_end = 0
                for fields in reader:
                    start, previous_end = previous_end + 1, reader.line_num
                    if fields:
                        yield start, fields
        except UnicodeDecodeError:
            raise undecodable_error(self.path) from None
        except csv.Error as error:
            raise ReaderError(self.path, f"unreadable CSV: {error}") from None

    def line_of_row(self, row: int) -> int:
        """The physical line of data row ``row`` (0-based): an exact pass over the file (slow path)."""
        for index, (start, _) in enumerate(self.rows()):
            if index == row + self.header_lines:
                return start
        return row + self.header_lines + 1

    def _diagnose(self, names: tuple[str, ...], error: pa.ArrowInvalid) -> ReaderError:
        """Turn a pyarrow parse failure into an error naming the first row with a wrong column count."""
        expected = len(names)
        for index, (start, fields) in enumerate(self.rows()):
            if index < self.header_lines or len(fields) == expected:
                continue
            got = f"expected {expected} columns, got {len(fields)}"
            if len(fields) < expected:
                return ReaderError(self.path, f"missing ({got})", line=start, column=names[len(fields)])
            return ReaderError(
                self.path, f"unexpected extra value ({got})", line=start, column=f"#{expected + 1}"
            )
        return ReaderError(self.path, f"cannot parse: {error}")


class DelimitedReader:
    """A delimited text file whose columns are described by a schema (``FeatureSpec.raw_column``).

    Args:
        path: the file.
        schema: the fields to read; columns of the file that no field names are ignored.
        delimiter: ``,`` for CSV, ``\\t`` for TSV.
        column_names: for files without a header line, the name of every column in order.
        quoting: honour ``"``-quoted fields (off for raw TSV logs whose text holds stray quotes).
        signed_labels: also accept ``-1`` / ``+1`` labels.
        allow_missing_columns: a schema field absent from the header is left out of the chunks (the
            encoder then sees it as missing) instead of being an error.

    ``Chunk.first_line`` is counted on the fast path as header + rows before + 1: exact unless earlier
    rows hold quoted newlines or blank lines. Line numbers in errors are always exact.
    """

    def __init__(
        self,
        path: Path,
        schema: FeatureSchema,
        *,
        delimiter: str = ",",
        column_names: Sequence[str] | None = None,
        quoting: bool = True,
        signed_labels: bool = False,
        allow_missing_columns: bool = False,
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.text = TextFile(self.path, delimiter=delimiter, column_names=column_names, quoting=quoting)
        self.signed_labels = signed_labels
        self.allow_missing_columns = allow_missing_columns

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` rows; raises ``ReaderError`` on the first malformed row."""
        names = self.text.header()
        wanted = self._wanted(names)
        rows_before = 0
        include = [self.schema.label, *(raw for _, raw, _ in wanted)]
        for table in self.text.tables(names, include, chunk_rows):
            yield self._convert(table, wanted, rows_before)
            rows_before += table.num_rows
        if rows_before == 0:
            header_only = self.text.column_names is None
            raise ReaderError(self.path, "no data rows (header only)" if header_only else "no data rows")

    def _wanted(self, names: tuple[str, ...]) -> list[tuple[str, str, bool]]:
        self.text.require(names, [self.schema.label], "label column")
        absent = [spec.raw_column for spec in self.schema.fields if spec.raw_column not in names]
        if absent and not self.allow_missing_columns:
            self.text.require(names, absent, "schema field")
        if absent:
            logger.warning("%s: columns %s absent, read as missing", self.path, absent)
        return field_columns(self.schema, set(names))

    def _convert(self, table: pa.Table, wanted: list[tuple[str, str, bool]], rows_before: int) -> Chunk:
        def locate(row: int) -> int:
            return self.text.line_of_row(rows_before + row)

        label = self.schema.label
        labels = parse_labels(
            strings(table.column(label)), locate, self.path, label, signed=self.signed_labels
        )
        columns: dict[str, Any] = {}
        for name, raw, numeric in wanted:
            column = table.column(raw)
            if numeric:
                fast = arrow_numbers(column)
                columns[name] = (
                    fast if fast is not None else parse_numbers(strings(column), locate, self.path, raw)
                )
            else:
                columns[name] = strings(column)
        return Chunk(columns, labels, self.text.header_lines + rows_before + 1)
