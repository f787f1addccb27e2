"""Every registered model serves through ``POST /rank`` with exactly the CTRs ONNX Runtime gives.

Each model of the registry is built over the Frappe-shaped encoder, given non-trivial weights,
exported by the real exporter (parity-checked) and written with ``model.bundle.write_bundle``: the
session's shared bundles (``tests/exported.py``), copied into one models directory. The service starts
on that directory with one experiment per model (one arm, 100 %) from its experiments file and serves
``model.onnx`` (``request_graph`` off: the request-shaped graphs have their own serving test); a request
naming ``family-<model>`` is served by that model, and its CTRs must equal ONNX Runtime's on the same raw
rows encoded by ``encoder.transform``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.bundle import ONNX
from model.encoder import FeatureEncoder
from model.nets import REGISTRY
from service.app import create_app
from service.settings import ServiceSettings
from tests.exported import VERSION, ExportedFamily
from tests.service.bundles import CONTEXT_VALUES, item_features

pytest.importorskip("torch")  # exporting needs the training dependencies; serving itself does not
CANDIDATES = 25


@pytest.fixture(scope="module")
def family_dir(exported_family: ExportedFamily, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with one bundle per registered model, and an experiments file."""
    root = tmp_path_factory.mktemp("family")
    exported_family.models_dir(list(REGISTRY), root / "models")
    experiments = [
        {"name": f"family-{name}", "arms": [{"name": name, "model": name, "weight": 100}], "control": name}
        for name in REGISTRY
    ]
    (root / "experiments.json").write_text(json.dumps(experiments))
    return root


@pytest.fixture(scope="module")
def encoder(exported_family: ExportedFamily) -> FeatureEncoder:
    """The encoder the bundles were exported with."""
    return exported_family.encoder


@pytest.fixture(scope="module")
def client(family_dir: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(
        models_dir=family_dir / "models",
        database_url=f"sqlite:///{family_dir / 'apprank.db'}",
        experiments_file=family_dir / "experiments.json",
        event_log=False,
        request_graph=False,
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
