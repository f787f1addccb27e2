"""Every registered model serves through ``POST /rank`` with exactly the CTRs ONNX Runtime gives.

Each model of the registry is built over the Frappe-shaped encoder, given non-trivial weights,
exported by the real exporter (parity-checked) and written with ``model.bundle.write_bundle`` into one
models directory. The service starts on that directory with one experiment per model (one arm, 100 %)
from its experiments file; a request naming ``family-<model>`` is served by that model, and its CTRs
must equal ONNX Runtime's on the same raw rows encoded by ``encoder.transform``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.bundle import ONNX, Manifest, sha256_file, write_bundle
from model.encoder import FeatureEncoder
from model.nets import REGISTRY
from service.app import create_app
from service.settings import ServiceSettings
from tests.service.bundles import CONTEXT_VALUES, item_features, synthetic_rows

if TYPE_CHECKING:
    from torch import nn

pytest.importorskip("torch")  # exporting needs the training dependencies; serving itself does not
CANDIDATES = 25
VERSION = "20260701.000000"


def perturbed(name: str, encoder: FeatureEncoder, seed: int) -> nn.Module:
    """The model with weights far enough from their tiny initial values that every row scores apart."""
    import torch

    from model.nets import build_model
    from model.nets.params import DeepParams

    torch.manual_seed(seed)
    params = {"hidden_units": [32, 32]} if issubclass(REGISTRY[name].params, DeepParams) else {}
    model = build_model(name, encoder.layout, params)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def write_model_bundle(name: str, encoder: FeatureEncoder, out: Path, seed: int) -> None:
    """Export ``name`` with the parity check and write it as a bundle at ``out``."""
    from model.export import OPSET, export_onnx, parity_check

    model = perturbed(name, encoder, seed)
    rows = synthetic_rows()
    example = encoder.transform(rows, len(rows["user"]))
    staging = out.parent / f".staging-{name}"
    staging.mkdir(parents=True)
    export_onnx(model, encoder.layout, example, staging / ONNX)
    parity = parity_check(model, encoder.layout, example, staging / ONNX)
    assert parity.passed, parity
    manifest = Manifest(
        name=name, model=name, version=VERSION, created_at=datetime.now(UTC),
        schema_hash=encoder.schema.content_hash(), data_fingerprint="synthetic",
        onnx_sha256=sha256_file(staging / ONNX), opset=OPSET, inputs=list(encoder.schema.names),
        parity=parity, metrics={}, hyperparameters={"model": name},
    )  # fmt: skip
    write_bundle(out, manifest, encoder.schema, encoder, staging)


@pytest.fixture(scope="module")
def family_dir(encoder: FeatureEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with one bundle per registered model, and an experiments file."""
    root = tmp_path_factory.mktemp("family")
    for seed, name in enumerate(REGISTRY):
        write_model_bundle(name, encoder, root / "models" / name, seed)
    experiments = [
        {"name": f"family-{name}", "arms": [{"name": name, "model": name, "weight": 100}], "control": name}
        for name in REGISTRY
    ]
    (root / "experiments.json").write_text(json.dumps(experiments))
    return root


@pytest.fixture(scope="module")
def client(family_dir: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(
        models_dir=family_dir / "models",
        database_url=f"sqlite:///{family_dir / 'apprank.db'}",
        experiments_file=family_dir / "experiments.json",
        event_log=False,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def request_and_rows() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A /rank body, and the same rows as raw columns (user and context repeated per candidate)."""
    context = {name: values[1 % len(values)] for name, values in CONTEXT_VALUES.items()}
    apps = [f"a{i}" for i in range(CANDIDATES)]
    body = {
        "user_id": "7",
        "context": context,
        "candidates": [{"app_id": app, "features": item_features(i)} for i, app in enumerate(apps)],
    }
    columns = {name: np.array([value] * CANDIDATES) for name, value in context.items()}
    columns["user"] = np.array(["7"] * CANDIDATES)
    columns["item"] = np.array(apps)
    for field in item_features(0):
        columns[field] = np.array([item_features(i)[field] for i in range(CANDIDATES)])
    return body, columns


def test_every_model_is_loaded(client: TestClient) -> None:
    loaded = {m["name"]: m["model"] for m in client.get("/models").json()}
    assert loaded == {name: name for name in REGISTRY}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_rank_serves_the_models_onnx_ctrs(
    name: str, client: TestClient, family_dir: Path, encoder: FeatureEncoder
) -> None:
    from model.export import onnx_ctr

    body, columns = request_and_rows()
    answer = client.post("/rank", json={**body, "experiment": f"family-{name}"})
    assert answer.status_code == 200, answer.text
    served = answer.json()
    assert (served["experiment"], served["arm"], served["model"]) == (f"family-{name}", name, name)
    assert served["version"] == VERSION
    expected = onnx_ctr(family_dir / "models" / name / ONNX, encoder.transform(columns, CANDIDATES))
    assert np.unique(expected).size == CANDIDATES  # every candidate scores apart: a real comparison
    ctr = {item["app_id"]: item["ctr"] for item in served["items"]}
    np.testing.assert_allclose([ctr[f"a{i}"] for i in range(CANDIDATES)], expected, rtol=0, atol=1e-6)
    apps = np.array([f"a{i}" for i in range(CANDIDATES)])
    order = [item["app_id"] for item in served["items"]]
    assert order == apps[np.lexsort((apps, -expected))].tolist()  # best first, ties by app_id
