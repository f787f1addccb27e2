"""The Criteo display-advertising TSV: no header; label, 13 integer and 26 hashed categorical columns."""

from __future__ import annotations

from pathlib import Path

from model.schema import FeatureSchema
from training.readers.delimited import DelimitedReader

CRITEO_INTEGER = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_INTEGER, *CRITEO_CATEGORICAL)


class CriteoReader(DelimitedReader):
    """A Criteo TSV file (``dac_8k.txt``, the challenge's ``train.txt``): empty fields are missing.

    The column names are fixed (``label, I1..I13, C1..C26``); the schema (``configs/schemas/criteo.yaml``)
    says what each becomes. Quotes are not special in these files.
    """

    def __init__(self, path: Path, schema: FeatureSchema) -> None:
        names = (schema.label, *CRITEO_COLUMNS[1:])
        super().__init__(path, schema, delimiter="\t", column_names=names, quoting=False)
