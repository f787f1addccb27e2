"""Training/serving parity on real rows: the training path and POST /rank give the same tensors and CTRs.

A DeepFM-D bundle is exported by the real exporter (``model.export``) with an encoder fitted on
frappe_ctr's training file. The first rows of ``test.csv`` are read with the training reader, encoded
with ``encoder.transform`` and scored by ONNX Runtime; the same rows, grouped into requests by user and
context (negatives share the positive's user and context), go through ``POST /rank``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from model.bundle import ONNX, Manifest, sha256_file, write_bundle
from model.encoder import FeatureEncoder
from model.fitting import fit_encoder
from model.schema import FeatureSchema, Source
from service.app import create_app
from service.rank.payload import parse_rank_request
from service.settings import ServiceSettings
from tests.service.bundles import FRAPPE_SCHEMA

pytestmark = pytest.mark.slow
ROWS = 600


def export_deepfm(encoder: FeatureEncoder, out: Path) -> None:
    torch = pytest.importorskip("torch")
    from model.export import OPSET, export_onnx, parity_check
    from model.nets import build_model

    torch.manual_seed(0)
    net = build_model("deepfm", encoder.layout)
    with torch.no_grad():  # untrained weights are tiny; larger ones make every row score differently
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.3)
    example = encoder.transform({}, 4)
    staging = out.parent / ".staging"
    staging.mkdir(parents=True)
    export_onnx(net, encoder.layout, example, staging / ONNX)
    probe = encoder.transform({name: np.array(["1", "2", "3"]) for name in encoder.schema.names}, 3)
    parity = parity_check(net, encoder.layout, probe, staging / ONNX)
    manifest = Manifest(
        name="deepfm",
        model="deepfm",
        version="20260601.000000",
        created_at=datetime.now(UTC),
        schema_hash=encoder.schema.content_hash(),
        data_fingerprint="frappe_ctr",
        onnx_sha256=sha256_file(staging / ONNX),
        opset=OPSET,
        inputs=list(encoder.schema.names),
        parity=parity,
        metrics={},
        hyperparameters={},
    )
    write_bundle(out, manifest, encoder.schema, encoder, staging)


def read_split(data_dir: Path, schema: FeatureSchema, name: str, rows: int | None = None) -> dict[str, Any]:
    from training.readers.base import read_all
    from training.readers.delimited import DelimitedReader

    columns = read_all(DelimitedReader(data_dir / "frappe_ctr" / name, schema)).columns
    return {k: v[:rows] if rows else v for k, v in columns.items()}


def requests_of(columns: dict[str, Any], schema: FeatureSchema) -> list[tuple[list[int], dict[str, Any]]]:
    """(row numbers, /rank body) per group of rows sharing user and context, without repeated apps."""
    shared = [f.name for f in schema.fields if f.source is not Source.ITEM]
    items = [f.name for f in schema.by_source(Source.ITEM) if f.name != schema.item_id_field]
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for row in range(ROWS):
        groups[tuple(str(columns[name][row]) for name in shared)].append(row)
    out = []
    for rows in groups.values():
        apps = [str(columns["item"][r]) for r in rows]
        if len(set(apps)) != len(apps):
            continue
        first = rows[0]
        body = {
            "user_id": str(columns["user"][first]),
            "context": {f.name: columns[f.name][first] for f in schema.by_source(Source.CONTEXT)},
            "candidates": [
                {"app_id": str(columns["item"][r]), "features": {name: columns[name][r] for name in items}}
                for r in rows
            ],
        }
        out.append((rows, orjson.loads(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))))
    return out


def test_training_and_serving_give_the_same_tensors_and_scores(data_dir: Path, tmp_path: Path) -> None:
    schema = FeatureSchema.load(FRAPPE_SCHEMA)
    encoder = fit_encoder(schema, read_split(data_dir, schema, "train.csv"))
    export_deepfm(encoder, tmp_path / "models" / "deepfm")
    columns = read_split(data_dir, schema, "test.csv", ROWS)
    from model.export import onnx_ctr

    encoded = encoder.transform(columns, ROWS)
    expected = onnx_ctr(tmp_path / "models" / "deepfm" / ONNX, encoded)
    assert expected.std() > 0.05  # the untrained net still separates rows: a real comparison
    settings = ServiceSettings(models_dir=tmp_path / "models", database_url=f"sqlite:///{tmp_path / 'p.db'}")
    compared = 0
    with TestClient(create_app(settings)) as client:
        serving_encoder = client.app.state.service.registry.get("deepfm").encoder  # type: ignore[attr-defined]
        for rows, body in requests_of(columns, schema):
            tensors = serving_encoder.encode(parse_rank_request(orjson.dumps(body), 2000))
            for name, array in tensors.items():
                np.testing.assert_array_equal(array, encoded[name][rows], err_msg=name)
            answer = client.post("/rank", json=body).json()
            served = {item["app_id"]: item["ctr"] for item in answer["items"]}
            got = [served[str(columns["item"][r])] for r in rows]
            np.testing.assert_allclose(got, expected[rows], rtol=0, atol=1e-6)
            compared += len(rows)
    assert compared > ROWS // 2
