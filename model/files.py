"""The training-data file rules shared by every writer and reader: the schema file beside the data."""

from __future__ import annotations

from pathlib import Path

import yaml

from model.schema import FeatureSchema


def schema_sibling(path: Path) -> Path:
    """``X.schema.yaml`` beside ``X.csv``, ``X.tsv`` or ``X.parquet``."""
    return path.with_name(f"{path.stem}.schema.yaml")


def save_schema_yaml(schema: FeatureSchema, path: Path) -> None:
    """Write a schema as YAML (``FeatureSchema.load`` reads it back)."""
    path.write_text(yaml.safe_dump(schema.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
