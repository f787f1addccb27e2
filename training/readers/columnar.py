"""Parquet files described by a schema, read batch by batch (never the whole file at once).

Parquet columns are typed, so conversion follows the type: numbers stay numbers (categorical fields
get their canonical decimal text, ``5.0`` -> ``"5"``), lists (a multi-valued field written as a list)
are joined with the field's separator, nulls are missing. Errors name the 1-based row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.parquet as pq

from model.columns import as_category_strings
from model.schema import FeatureKind, FeatureSchema, FeatureSpec
from training.readers.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    FloatArray,
    LabelArray,
    ReaderError,
    parse_labels,
    parse_numbers,
)
from training.readers.delimited import strings


class ParquetReader:
    """A Parquet file whose columns are described by a schema (``FeatureSpec.raw_column``).

    Args:
        path: the file.
        schema: the fields to read; other columns are ignored.
        allow_missing_columns: a schema field absent from the file is left out instead of an error.
    """

    def __init__(self, path: Path, schema: FeatureSchema, *, allow_missing_columns: bool = False) -> None:
        self.path = Path(path)
        self.schema = schema
        self.allow_missing_columns = allow_missing_columns

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` rows; raises ``ReaderError`` on a bad value."""
        handle = self._open()
        specs = self._present(set(handle.schema_arrow.names))
        columns = [self.schema.label, *(spec.raw_column for spec in specs)]
        rows_before = 0
        for batch in handle.iter_batches(batch_size=chunk_rows, columns=columns):
            if batch.num_rows == 0:
                continue
            yield self._convert(batch, specs, rows_before)
            rows_before += batch.num_rows
        if rows_before == 0:
            raise ReaderError(self.path, "no data rows")

    def _open(self) -> pq.ParquetFile:
        if not self.path.is_file():
            raise ReaderError(self.path, "no such file")
        if self.path.stat().st_size == 0:
            raise ReaderError(self.path, "empty file")
        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ReaderError(self.path, f"not a Parquet file ({error})") from None

    def _present(self, names: set[str]) -> list[FeatureSpec]:
        if self.schema.label not in names:
            raise ReaderError(self.path, "label column not in the file", column=self.schema.label)
        absent = [spec.raw_column for spec in self.schema.fields if spec.raw_column not in names]
        if absent and not self.allow_missing_columns:
            raise ReaderError(self.path, "schema field not in the file", column=absent[0])
        return [spec for spec in self.schema.fields if spec.raw_column in names]

    def _convert(self, batch: pa.RecordBatch, specs: list[FeatureSpec], rows_before: int) -> Chunk:
        def locate(row: int) -> int:
            return rows_before + row + 1

        labels = self._labels(batch.column(self.schema.label), locate)
        columns: dict[str, Any] = {}
        for spec in specs:
            array = batch.column(spec.raw_column)
            if spec.kind is FeatureKind.NUMERIC:
                columns[spec.name] = self._numbers(array, locate, spec.raw_column)
            else:
                columns[spec.name] = self._text(array, spec.separator)
        return Chunk(columns, labels, rows_before + 1)

    def _labels(self, array: pa.Array, locate: Any) -> LabelArray:
        label = self.schema.label
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            return parse_labels(strings(array), locate, self.path, label)
        if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            raise ReaderError(self.path, f"label column has type {array.type}", column=label)
        values: FloatArray = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
        valid = (values == 0.0) | (values == 1.0)
        if not valid.all():
            row = int(np.argmin(valid))
            shown = "null" if np.isnan(values[row]) else f"{float(values[row]):g}"
            reason = f"bad label {shown} (expected 0 or 1)"
            raise ReaderError(self.path, reason, line=locate(row), column=label)
        return values.astype(np.float32)

    def _numbers(self, array: pa.Array, locate: Any, column: str) -> FloatArray:
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            return parse_numbers(strings(array), locate, self.path, column)
        if pa.types.is_null(array.type):
            return np.full(len(array), np.nan)
        if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            raise ReaderError(self.path, f"numeric field has type {array.type}", column=column)
        return np.asarray(
            pa_compute.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )

    def _text(self, array: pa.Array, separator: str) -> Any:
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            array = pa_compute.binary_join(pa_compute.cast(array, pa.list_(pa.string())), separator)
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            return strings(array)
        if pa.types.is_null(array.type):
            return np.full(len(array), "", dtype=str)
        values: Any = array.to_numpy(zero_copy_only=False)
        return as_category_strings(values)
