"""Training rows from the event log: every impression, labeled 1 when its item was downloaded in the
same request, with the raw features that were scored.

The file is in the training-data format of ``model.files`` (what the training readers read): values in
the canonical text form of ``model.columns`` (``5.0`` -> ``"5"``, booleans as ``true``/``false``), the
same form the service's encoder sees, so training encodes them identically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import SCHEMA, BundleError, read_manifest
from model.files import TableWriter, canonical_column, save_schema_yaml, schema_sibling
from model.schema import FeatureKind, FeatureSchema, FeatureSpec, Source
from model.versions import current_path, version_path
from pipeline.store_columns import store_chunks
from service.events.rows import LabeledRow
from service.events.store import EventStore
from training.readers.base import Chunk

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
    """The one schema of the bundles that served (``models_dir/<model>``: the logged version when it is
    kept, else the current one); they must agree."""
    if not models:
        raise ExportError("no served lists in that window: nothing tells which model's schema to use")
    schemas: dict[str, FeatureSchema] = {}
    for model, version in models:
        directory = bundle_dir(models_dir / model, version)
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


def bundle_dir(model_dir: Path, version: str) -> Path:
    """The bundle of ``version`` of the model at ``model_dir``, else its current one, else the directory."""
    try:
        return version_path(model_dir, version)
    except BundleError:
        pass
    try:
        return current_path(model_dir)
    except BundleError:
        return model_dir


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
    """A block's raw values, one list per field (by field name); ``raw_value`` of every row, a field
    at a time (no call per value)."""
    columns: dict[str, list[Any]] = {}
    for spec in schema.fields:
        name = spec.name
        source = (
            "user" if spec.source is Source.USER else "context" if spec.source is Source.CONTEXT else "item"
        )
        values = [getattr(row, source).get(name) for row in block]
        filled_from = schema.filled_from(name)
        if filled_from is not None:
            attribute = "user_id" if filled_from == "user_id" else "app_id"
            values = [
                getattr(row, attribute) if value is None else value
                for value, row in zip(values, block, strict=True)
            ]
        columns[name] = values
    return columns


def block_chunk(block: Sequence[LabeledRow], schema: FeatureSchema, first_line: int = 1) -> Chunk:
    """A block of labeled rows as the training readers' ``Chunk`` (canonical columns).

    The values go through ``canonical_column``, what ``export_training`` writes, and come out as the
    Parquet reader reads that file back (text as unicode, ``""`` missing; numbers as float64, NaN
    missing), so a row encodes the same whether it went through a file or not.
    """
    columns: dict[str, Any] = {}
    for name, values in block_columns(block, schema).items():
        spec = schema.field(name)
        canonical = canonical_column(spec, values)
        if spec.kind is FeatureKind.NUMERIC:
            columns[name] = np.array([np.nan if v is None else v for v in canonical], dtype=np.float64)
        else:
            columns[name] = np.array(canonical, dtype=str) if canonical else np.empty(0, dtype=str)
    labels = np.fromiter((row.label for row in block), dtype=np.float32, count=len(block))
    return Chunk(columns, labels, first_line)


def labeled_chunks(
    store: EventStore,
    experiment: str,
    start_ts: float,
    end_ts: float,
    schema: FeatureSchema,
    block_rows: int = 50_000,
) -> Iterator[Chunk]:
    """The labeled impressions of ``experiment`` in [start_ts, end_ts) as chunks of ``block_rows`` rows,
    streamed from the store (one block of rows in memory at a time), decoded a column at a time
    (``pipeline.store_columns``): the chunks ``block_chunk`` makes of ``labeled_rows``."""
    return store_chunks(store.training_pages(experiment, start_ts, end_ts), schema, block_rows)


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
    rows = positives = 0
    with TableWriter(out, schema) as writer:
        for block in blocks(store.labeled_rows(experiment, start_ts, end_ts), block_rows):
            labels = [row.label for row in block]
            writer.write(labels, block_columns(block, schema))
            rows += len(block)
            positives += sum(labels)
    schema_path = schema_sibling(out)
    save_schema_yaml(schema, schema_path)
    models = store.served_models(experiment, start_ts, end_ts)
    log.info("exported %d rows (%d positive) of %s to %s", rows, positives, experiment, out)
    return ExportSummary(path=out, schema_path=schema_path, rows=rows, positives=positives, models=models)
