"""Writing reader chunks in the training-data format (``model.files``): CSV or Parquet plus a
``.schema.yaml`` sibling, as ``apprank synth`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.files import TableWriter, save_schema_yaml, schema_sibling
from model.schema import FeatureSchema
from training.readers.base import Chunk


def write_table(
    path: Path,
    chunk: Chunk,
    schema: FeatureSchema,
    *,
    extra: Mapping[str, npt.ArrayLike] | None = None,
    sibling_schema: bool = True,
) -> Path:
    """Write ``chunk`` as CSV or TSV (``.csv``, ``.tsv``) or Parquet, with ``X.schema.yaml`` beside it.

    Args:
        path: the output file; its suffix picks the format.
        chunk: the rows (columns keyed by field name, as readers produce them); fields it lacks are left out.
        schema: names the columns (``raw_column``) and the label.
        extra: more columns to write (ignored by the readers, e.g. the true probability).
        sibling_schema: also write ``X.schema.yaml``.

    Returns:
        The path written.
    """
    extra_arrays = {name: np.asarray(values) for name, values in (extra or {}).items()}
    fields = [spec for spec in schema.fields if spec.name in chunk.columns]
    dtypes = {name: values.dtype for name, values in extra_arrays.items()}
    with TableWriter(path, schema, fields, dtypes) as writer:
        writer.write(chunk.labels, chunk.columns, extra_arrays)
    if sibling_schema:
        save_schema_yaml(schema, schema_sibling(path))
    return path
