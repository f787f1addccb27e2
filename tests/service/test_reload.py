"""POST /models/reload: new versions swap in; broken bundles are refused and the old version serves."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.bundle import MANIFEST, ONNX, SCHEMA, sha256_file
from model.encoder import FeatureEncoder
from tests.service.bundles import random_weights, write_lr_bundle
from tests.service.conftest import ADMIN, fifty_fifty, rank_body


def version_of(client: TestClient, model: str = "lr") -> str:
    return str(next(m["version"] for m in client.get("/models").json() if m["name"] == model))


def test_reload_swaps_in_a_new_version(client: TestClient, models_dir: Path, encoder: FeatureEncoder) -> None:
    write_lr_bundle(models_dir / "lr", encoder, random_weights(encoder, seed=9), version="20260301.000000")
    write_lr_bundle(models_dir / "lr3", encoder, random_weights(encoder, seed=3), version="20260302.000000")
    response = client.post("/models/reload", headers=ADMIN)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (sorted(report["loaded"]), report["unchanged"], report["refused"]) == (["lr", "lr3"], ["lr2"], {})
    assert version_of(client) == "20260301.000000"
    assert client.post("/rank", json=rank_body(3)).json()["version"] == "20260301.000000"


def corrupt_onnx_bytes(bundle: Path) -> None:
    (bundle / ONNX).write_bytes(b"not an onnx graph")


def corrupt_onnx_resigned(bundle: Path) -> None:
    """Garbage whose sha256 is recorded: only ONNX Runtime can tell."""
    (bundle / ONNX).write_bytes(b"\x08\x07garbage")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["onnx_sha256"] = sha256_file(bundle / ONNX)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def schema_mismatch(bundle: Path) -> None:
    schema = json.loads((bundle / SCHEMA).read_text())
    schema["fields"][0]["min_count"] = 7
    (bundle / SCHEMA).write_text(json.dumps(schema))


def failed_parity(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["parity"]["passed"] = False
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def missing_file(bundle: Path) -> None:
    (bundle / ONNX).unlink()


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (corrupt_onnx_bytes, "sha256 differs from the manifest's"),
        (corrupt_onnx_resigned, "ONNX Runtime cannot load it"),
        (schema_mismatch, "schema hash mismatch"),
        (failed_parity, "parity check did not pass"),
        (missing_file, "model.onnx: missing"),
    ],
)
def test_a_broken_bundle_is_refused_and_the_old_one_serves(
    client: TestClient,
    models_dir: Path,
    encoder: FeatureEncoder,
    breakage: Callable[[Path], None],
    reason: str,
) -> None:
    staging = models_dir.parent / "next"
    write_lr_bundle(staging / "lr", encoder, random_weights(encoder, seed=5), version="20260401.000000")
    breakage(staging / "lr")
    shutil.rmtree(models_dir / "lr")
    shutil.copytree(staging / "lr", models_dir / "lr")
    response = client.post("/models/reload", headers=ADMIN)
    assert response.status_code == 422
    body = response.json()
    assert reason in body["refused"]["lr"], body
    assert body["detail"][0]["loc"] == ["models", "lr"]
    assert version_of(client) == "20260101.000000"
    answer = client.post("/rank", json=rank_body(3))
    assert answer.status_code == 200 and answer.json()["version"] == "20260101.000000"
    metrics = client.get("/metrics").text
    assert 'apprank_model_load_failures_total{model="lr"}' in metrics


def test_a_model_used_by_an_experiment_is_kept_when_its_directory_goes(
    client: TestClient, models_dir: Path
) -> None:
    client.put("/experiments/exp", json=fifty_fifty(), headers=ADMIN)
    shutil.rmtree(models_dir / "lr2")
    body = client.post("/models/reload", headers=ADMIN).json()
    assert "experiments use 'lr2'" in body["refused"]["lr2"]
    assert [m["name"] for m in body["models"]] == ["lr", "lr2"]


def test_an_unused_model_whose_directory_goes_is_unloaded(client: TestClient, models_dir: Path) -> None:
    shutil.rmtree(models_dir / "lr2")
    body = client.post("/models/reload", headers=ADMIN).json()
    assert body["removed"] == ["lr2"] and [m["name"] for m in body["models"]] == ["lr"]
    assert 'apprank_model_loaded{model="lr2",version="20260102.000000"} 0.0' in client.get("/metrics").text
