"""A small mixed schema (every input role) fitted on random rows, shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest

from model.encoder import Encoded, FeatureEncoder
from model.fitting import fit_encoder
from model.schema import FeatureSchema

MIXED_SCHEMA = {
    "name": "mixed",
    "fields": [
        {"name": "user", "kind": "categorical", "source": "user"},
        {"name": "device", "kind": "hashed", "source": "user", "num_buckets": 64},
        {"name": "installed", "kind": "multi", "source": "user", "max_len": 4},
        {
            "name": "hour",
            "kind": "numeric",
            "source": "context",
            "transform": "quantile_bucket",
            "num_buckets": 6,
        },
        {"name": "item", "kind": "categorical", "source": "item"},
        {"name": "price", "kind": "numeric", "source": "item", "transform": "log"},
        {"name": "size", "kind": "numeric", "source": "item", "transform": "standardize"},
    ],
}


def random_columns(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cats = np.array(["games", "news", "tools", "food", "music"])
    installed = ["|".join(rng.choice(cats, size=rng.integers(0, 5))) for _ in range(rows)]
    return {
        "user": rng.integers(0, 50, rows).astype(str),
        "device": rng.choice(np.array(["pixel", "iphone", "galaxy", ""]), rows),
        "installed": np.array(installed),
        "hour": rng.integers(0, 24, rows).astype(np.float64),
        "item": rng.integers(0, 30, rows).astype(str),
        "price": np.where(rng.random(rows) < 0.1, np.nan, rng.exponential(3.0, rows)),
        "size": rng.normal(50.0, 20.0, rows),
    }


@pytest.fixture(scope="session")
def mixed_schema() -> FeatureSchema:
    return FeatureSchema.model_validate(MIXED_SCHEMA)


@pytest.fixture(scope="session")
def mixed_encoder(mixed_schema: FeatureSchema) -> FeatureEncoder:
    return fit_encoder(mixed_schema, random_columns(2000))


@pytest.fixture(scope="session")
def mixed_rows(mixed_encoder: FeatureEncoder) -> Encoded:
    return mixed_encoder.transform(random_columns(512, seed=1), 512)
