"""Training rows from the event log: every impression, labeled 1 when its item was downloaded in the
same request, with the raw features that were scored.

The layout is the training readers' (see ``training/readers/writer.py``): the label column first, then
one column per schema field under its ``raw_column`` name, multi-valued fields joined by their
separator, missing values empty (CSV) or null (Parquet), and ``X.schema.yaml`` beside ``X.csv``.
Values are written in the canonical text form of ``model.columns`` (``5.0`` -> ``"5"``, booleans as
``true``/``false``), the same form the service's encoder sees, so training encodes them identically.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.bundle import SCHEMA, read_manifest
from model.columns import as_category_strings, as_float
from model.files import save_schema_yaml, schema_sibling
from model.schema import FeatureKind, FeatureSchema, FeatureSpec, Source
from service.events.rows import LabeledRow
from service.events.store import EventStore

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The export cannot be written (no schema, conflicting schemas, unknown format)."""


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: Path
    schema_path: Path
    rows: int
    positives: int
    models: list[tuple[str, str]]


def schema_from_bundles(models: Sequence[tuple[str, str]], models_dir: Path) -> FeatureSchema:
    """The one schema of the bundles that served (``models_dir/<model>``); they must agree."""
    if not models:
        raise ExportError("no served lists in that window: nothing tells which model's schema to use")
    schemas: dict[str, FeatureSchema] = {}
    for model, version in models:
        directory = models_dir / model
        if not (directory / SCHEMA).is_file():
            raise ExportError(f"{directory}: no bundle for model {model!r}; give --schema")
        bundle_version = read_manifest(directory).version
        if bundle_version != version:
            log.warning(
                "%s holds version %s, the log has %s: using its schema", directory, bundle_version, version
            )
        schemas[model] = FeatureSchema.load(directory / SCHEMA)
    if len({schema.content_hash() for schema in schemas.values()}) > 1:
        raise ExportError(
            f"models {sorted(schemas)} have different schemas; export one arm's model with --schema"
        )
    return next(iter(schemas.values()))


def raw_value(row: LabeledRow, spec: FeatureSpec, schema: FeatureSchema) -> Any:
    """A field's logged raw value, filling the id fields from user_id / app_id like the service does."""
    source = (
        row.user if spec.source is Source.USER else row.context if spec.source is Source.CONTEXT else row.item
    )
    value = source.get(spec.name)
    filled_from = schema.filled_from(spec.name) if value is None else None
    if filled_from is not None:
        return row.user_id if filled_from == "user_id" else row.app_id
    return value


def canonical_column(spec: FeatureSpec, values: list[Any]) -> list[str | float | None]:
    """One column of a block in canonical form: floats (None = missing) for numeric fields, else text."""
    if spec.kind is FeatureKind.NUMERIC:
        numbers = as_float(_objects(values))
        return [None if np.isnan(x) else float(x) for x in numbers.tolist()]
    if spec.kind is FeatureKind.MULTI:
        values = [_join(value, spec.separator) for value in values]
    return list(as_category_strings(_objects(values)).tolist())


def _objects(values: Sequence[Any]) -> npt.NDArray[np.object_]:
    """A 1-D object array (``np.array`` would turn lists of lists into 2-D)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _join(value: Any, separator: str) -> Any:
    if isinstance(value, list | tuple):
        return separator.join(as_category_strings(_objects(value)).tolist())
    return value


def blocks(rows: Iterable[LabeledRow], size: int) -> Iterator[list[LabeledRow]]:
    """Consecutive blocks of at most ``size`` rows."""
    block: list[LabeledRow] = []
    for row in rows:
        block.append(row)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def block_columns(block: Sequence[LabeledRow], schema: FeatureSchema) -> dict[str, list[Any]]:
    """A block as columns: label first, then one per field under its raw column name."""
    columns: dict[str, list[Any]] = {schema.label: [row.label for row in block]}
    for spec in schema.fields:
        columns[spec.raw_column] = canonical_column(spec, [raw_value(row, spec, schema) for row in block])
    return columns


def export_training(
    store: EventStore,
    experiment: str,
    start_ts: float,
    end_ts: float,
    out: Path,
    schema: FeatureSchema,
    *,
    block_rows: int = 50_000,
) -> ExportSummary:
    """Write the labeled impressions of ``experiment`` in [start_ts, end_ts) to ``out`` (.csv or .parquet)."""
    if out.suffix not in {".csv", ".parquet"}:
        raise ExportError(f"{out}: the output must end in .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _ParquetWriter(out, schema) if out.suffix == ".parquet" else _CsvWriter(out, schema)
    rows = positives = 0
    try:
        for block in blocks(store.labeled_rows(experiment, start_ts, end_ts), block_rows):
            columns = block_columns(block, schema)
            writer.write(columns)
            rows += len(block)
            positives += sum(columns[schema.label])
    finally:
        writer.close()
    schema_path = schema_sibling(out)
    save_schema_yaml(schema, schema_path)
    models = store.served_models(experiment, start_ts, end_ts)
    log.info("exported %d rows (%d positive) of %s to %s", rows, positives, experiment, out)
    return ExportSummary(path=out, schema_path=schema_path, rows=rows, positives=positives, models=models)


class _CsvWriter:
    def __init__(self, path: Path, schema: FeatureSchema) -> None:
        self._file = path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow([schema.label, *(spec.raw_column for spec in schema.fields)])

    def write(self, columns: dict[str, list[Any]]) -> None:
        text = [
            [("" if v is None else repr(v) if isinstance(v, float) else v) for v in c]
            for c in columns.values()
        ]
        self._csv.writerows(zip(*text, strict=True))

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    """Parquet through pyarrow (a training extra, imported only here)."""

    def __init__(self, path: Path, schema: FeatureSchema) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [pa.field(schema.label, pa.int8())]
        for spec in schema.fields:
            kind = pa.float64() if spec.kind is FeatureKind.NUMERIC else pa.string()
            fields.append(pa.field(spec.raw_column, kind))
        self._schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(path, self._schema)

    def write(self, columns: dict[str, list[Any]]) -> None:
        import pyarrow as pa

        self._writer.write_table(pa.Table.from_pydict(columns, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
