"""The training-data file format, once: what ``apprank synth`` and ``apprank export-training`` write and
the training readers read back.

A CSV/TSV (the standard library) or Parquet (pyarrow, a training extra, imported only when Parquet is
written) file: the label column first (0/1), then one column per schema field under its
``raw_column`` name, values in the canonical form of ``model.columns`` (the form the encoder sees, so
training and serving encode alike), multi-valued fields joined by their separator, missing values
empty (CSV) or null (Parquet), and ``X.schema.yaml`` beside ``X.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import yaml

from model.columns import as_category_strings, as_float
from model.schema import FeatureKind, FeatureSchema, FeatureSpec

SUFFIXES = {".csv": ",", ".tsv": "\t", ".parquet": ""}
Column = list[str] | list[float | None] | list[Any]


def schema_sibling(path: Path) -> Path:
    """``X.schema.yaml`` beside ``X.csv``, ``X.tsv`` or ``X.parquet``."""
    return path.with_name(f"{path.stem}.schema.yaml")


def save_schema_yaml(schema: FeatureSchema, path: Path) -> None:
    """Write a schema as YAML (``FeatureSchema.load`` reads it back)."""
    path.write_text(yaml.safe_dump(schema.model_dump(mode="json", exclude_defaults=True), sort_keys=False))


def canonical_column(spec: FeatureSpec, values: npt.NDArray[Any] | Sequence[Any]) -> Column:
    """One field's raw values as written: floats (None = missing) for numeric fields, else text."""
    raw = values if isinstance(values, np.ndarray) else _objects(values)
    if spec.kind is FeatureKind.NUMERIC:
        return [None if np.isnan(x) else x for x in as_float(raw).tolist()]
    if spec.kind is FeatureKind.MULTI and raw.dtype.kind == "O":
        raw = _objects([_join(value, spec.separator) for value in raw.tolist()])
    return list(as_category_strings(raw).tolist())


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    """A 1-D object array (``np.array`` would turn lists of lists into 2-D)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _join(value: Any, separator: str) -> Any:
    if isinstance(value, list | tuple | np.ndarray):
        return separator.join(as_category_strings(_objects(list(value))).tolist())
    return value


class _Sink(Protocol):
    def write(self, columns: dict[str, Column]) -> None: ...
    def close(self) -> None: ...


class TableWriter:
    """Rows written block by block in the training-data format; the suffix of ``path`` picks it.

    Args:
        path: ``.csv``, ``.tsv`` or ``.parquet``.
        schema: names the label and the columns.
        fields: the fields to write (default: all of the schema's, in order).
        extra: more columns after the fields, by name, with their numpy dtype (readers ignore them).
    """

    def __init__(
        self,
        path: Path,
        schema: FeatureSchema,
        fields: Sequence[FeatureSpec] | None = None,
        extra: Mapping[str, np.dtype[Any]] | None = None,
    ) -> None:
        if path.suffix not in SUFFIXES:
            raise ValueError(f"{path}: write .csv, .tsv or .parquet")
        self.schema = schema
        self.fields = tuple(schema.fields if fields is None else fields)
        self.extra = dict(extra or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        names = [schema.label, *(spec.raw_column for spec in self.fields), *self.extra]
        types = self._arrow_types(names)
        if path.suffix == ".parquet":
            self._sink: _Sink = _ParquetSink(path, types)
        else:  # only float columns need formatting; the others are text or integers already
            self._sink = _CsvSink(path, names, {name for name, kind in types if kind.startswith("float")})

    def write(
        self,
        labels: npt.ArrayLike,
        columns: Mapping[str, Any],
        extra: Mapping[str, npt.ArrayLike] | None = None,
    ) -> None:
        """One block: the labels, the raw values of each field (by field name) and the extra columns."""
        block: dict[str, Column] = {self.schema.label: np.asarray(labels).astype(np.int8).tolist()}
        for spec in self.fields:
            block[spec.raw_column] = canonical_column(spec, columns[spec.name])
        for name in self.extra:
            block[name] = np.asarray((extra or {})[name]).tolist()
        self._sink.write(block)

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _arrow_types(self, names: list[str]) -> list[tuple[str, str]]:
        kinds = ["int8", *("float64" if s.kind is FeatureKind.NUMERIC else "string" for s in self.fields)]
        kinds += [np.dtype(dtype).name for dtype in self.extra.values()]
        return list(zip(names, kinds, strict=True))


class _CsvSink:
    def __init__(self, path: Path, names: list[str], floats: set[str]) -> None:
        self._file = path.open("w", newline="")
        self._csv = csv.writer(self._file, delimiter=SUFFIXES[path.suffix])
        self._csv.writerow(names)
        self._floats = floats

    def write(self, columns: dict[str, Column]) -> None:
        text = [list(map(_cell, c)) if n in self._floats else c for n, c in columns.items()]
        self._csv.writerows(zip(*text, strict=True))

    def close(self) -> None:
        self._file.close()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for missing, floats in their shortest repr."""
    return "" if value is None else repr(value) if isinstance(value, float) else value


class _ParquetSink:
    def __init__(self, path: Path, types: list[tuple[str, str]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._schema = pa.schema([pa.field(name, pa.type_for_alias(kind)) for name, kind in types])
        self._writer = pq.ParquetWriter(path, self._schema)

    def write(self, columns: dict[str, Column]) -> None:
        import pyarrow as pa

        self._writer.write_table(pa.Table.from_pydict(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
