"""Writing rows in the layout the readers read back: CSV or Parquet plus a ``.schema.yaml`` sibling.

This is the training-data format of apprank: what ``apprank synth`` writes, and what an export of the
service's event log should write (one column per field under its ``raw_column`` name, the label as 0/1,
multi-valued fields joined by their separator, missing = empty / null).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from model.columns import as_category_strings, as_float
from model.files import save_schema_yaml, schema_sibling
from model.schema import FeatureKind, FeatureSchema
from training.readers.base import Chunk


def chunk_table(
    chunk: Chunk, schema: FeatureSchema, extra: Mapping[str, npt.ArrayLike] | None = None
) -> pa.Table:
    """The chunk as an Arrow table: label first, then one column per field present, then ``extra``."""
    arrays: dict[str, pa.Array] = {schema.label: pa.array(chunk.labels.astype(np.int8))}
    for spec in schema.fields:
        if spec.name not in chunk.columns:
            continue
        raw: Any = chunk.columns[spec.name]
        if spec.kind is FeatureKind.NUMERIC:
            arrays[spec.raw_column] = pa.array(as_float(raw), from_pandas=True)  # NaN -> null
        elif spec.kind is FeatureKind.MULTI and np.asarray(raw).dtype.kind == "O":
            rows = [spec.separator.join(map(str, row)) if row is not None else "" for row in raw]
            arrays[spec.raw_column] = pa.array(rows, type=pa.string())
        else:
            arrays[spec.raw_column] = pa.array(as_category_strings(raw).tolist(), type=pa.string())
    for name, values in (extra or {}).items():
        arrays[name] = pa.array(np.asarray(values))
    return pa.table(arrays)


def write_table(
    path: Path,
    chunk: Chunk,
    schema: FeatureSchema,
    *,
    extra: Mapping[str, npt.ArrayLike] | None = None,
    sibling_schema: bool = True,
) -> Path:
    """Write ``chunk`` as CSV (``.csv``) or Parquet (``.parquet``), with ``X.schema.yaml`` beside it.

    Args:
        path: the output file; its suffix picks the format.
        chunk: the rows (columns keyed by field name, as readers produce them).
        schema: names the columns (``raw_column``) and the label.
        extra: more columns to write (ignored by the readers, e.g. the true probability).
        sibling_schema: also write ``X.schema.yaml``.

    Returns:
        The path written.
    """
    table = chunk_table(chunk, schema, extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix in {".csv", ".tsv"}:
        delimiter = "\t" if path.suffix == ".tsv" else ","
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(delimiter=delimiter))
    else:
        raise ValueError(f"{path}: write .csv, .tsv or .parquet")
    if sibling_schema:
        save_schema_yaml(schema, schema_sibling(path))
    return path
