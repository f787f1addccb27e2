"""Fixtures for the reader, dataset and synthetic-store tests: schemas and tiny files in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from model.schema import FeatureSchema

SCHEMAS = Path(__file__).resolve().parents[2] / "configs" / "schemas"
WriteFile = Callable[[str, str], Path]


def load_schema(name: str) -> FeatureSchema:
    """A schema from ``configs/schemas``."""
    return FeatureSchema.load(SCHEMAS / f"{name}.yaml")


@pytest.fixture(scope="session")
def frappe_schema() -> FeatureSchema:
    return load_schema("frappe_ctr")


@pytest.fixture(scope="session")
def criteo_schema() -> FeatureSchema:
    return load_schema("criteo")


@pytest.fixture(scope="session")
def tiny_schema() -> FeatureSchema:
    """Three fields, one of each reading path: categorical text, a number, a multi-valued string."""
    return FeatureSchema.model_validate(
        {
            "name": "tiny",
            "fields": [
                {"name": "user", "kind": "categorical", "source": "user"},
                {"name": "score", "kind": "numeric", "source": "item", "transform": "standardize"},
                {"name": "tags", "kind": "multi", "source": "user", "separator": "|"},
            ],
        }
    )


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    """Write ``text`` to ``tmp_path/name`` and return the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
