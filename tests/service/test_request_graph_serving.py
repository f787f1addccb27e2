"""Bundles with request-shaped graphs: ``POST /rank`` through them equals ``POST /rank`` through model.onnx.

Real exported bundles (the exporter's own request graphs and parity check: the session's shared bundles,
``tests/exported.py``) copied into one models directory, served twice: with ``request_graph`` on (the
default) and off. Same candidates, same CTRs and order; a known app's item part is taken from the item
cache, not computed again (``item_part_rows``); a model that does not split (xDeepFM) serves its plain
graph either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.bundle import INT8_ONNX, Manifest
from service.app import create_app
from service.rank.registry import LoadedModel
from service.settings import ServiceSettings
from tests.exported import ExportedFamily
from tests.service.bundles import CONTEXT_VALUES, item_features

pytest.importorskip("torch")  # exporting needs the training dependencies; serving itself does not
MODELS = ("deepfm", "pnn_star", "lr", "xdeepfm")


@pytest.fixture(scope="module")
def models_root(exported_family: ExportedFamily, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("request-graphs")
    exported_family.models_dir(MODELS, root / "models")
    return root


def _client(root: Path, db: str, **settings: Any) -> Iterator[TestClient]:
    config = ServiceSettings(
        models_dir=root / "models", database_url=f"sqlite:///{root / db}", event_log=False, **settings
    )
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture(scope="module")
def request_client(models_root: Path) -> Iterator[TestClient]:
    yield from _client(models_root, "request.db")


@pytest.fixture(scope="module")
def plain_client(models_root: Path) -> Iterator[TestClient]:
    yield from _client(models_root, "plain.db", request_graph=False)


def loaded(client: TestClient, name: str) -> LoadedModel:
    model = client.app.state.service.registry.get(name)  # type: ignore[attr-defined]
    assert isinstance(model, LoadedModel)
    return model


def body(apps: list[int], user: str = "7") -> dict[str, Any]:
    context = {name: values[2 % len(values)] for name, values in CONTEXT_VALUES.items()}
    candidates = [{"app_id": f"a{i}", "features": item_features(i)} for i in apps]
    return {"user_id": user, "context": context, "candidates": candidates}


def ranked(client: TestClient, name: str, apps: list[int], user: str = "7") -> list[tuple[str, float]]:
    """The (app, ctr) list ``name`` serves (made the default model for this request: no experiments)."""
    previous = client.app.state.service.ranking.default_model  # type: ignore[attr-defined]
    client.app.state.service.ranking.default_model = name  # type: ignore[attr-defined]
    try:
        answer = client.post("/rank", json=body(apps, user))
    finally:
        client.app.state.service.ranking.default_model = previous  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    served = answer.json()
    assert served["model"] == name
    return [(item["app_id"], item["ctr"]) for item in served["items"]]


def test_the_graph_each_bundle_serves(request_client: TestClient, plain_client: TestClient) -> None:
    for name in MODELS:
        assert loaded(plain_client, name).graph == "plain"
    assert loaded(request_client, "xdeepfm").graph == "plain"
    for name in ("deepfm", "pnn_star", "lr"):
        model = loaded(request_client, name)
        assert model.graph == "request" and model.items_session is not None
        assert model.bundle.manifest.serving is not None and model.bundle.manifest.serving.graph == "request"


@pytest.mark.parametrize("name", MODELS)
def test_rank_with_the_request_graph_equals_rank_with_the_plain_graph(
    name: str, request_client: TestClient, plain_client: TestClient
) -> None:
    apps = list(range(0, 90, 3))
    for user in ("7", "12", "unseen-user"):
        request_shaped = ranked(request_client, name, apps, user)
        plain = ranked(plain_client, name, apps, user)
        assert [app for app, _ in request_shaped] == [app for app, _ in plain]
        np.testing.assert_allclose([c for _, c in request_shaped], [c for _, c in plain], rtol=0, atol=1e-5)
        assert len({c for _, c in plain}) == len(apps)  # every candidate scored apart: a real comparison


def test_a_known_apps_item_part_is_not_recomputed(request_client: TestClient) -> None:
    encoder = loaded(request_client, "deepfm").encoder
    assert encoder.item_tower is not None and encoder.item_cache is not None
    start = encoder.item_part_rows
    first = ranked(request_client, "deepfm", [1000, 1001, 1002, 1003])
    assert encoder.item_part_rows == start + 4  # four new apps: the item graph ran on them
    again = ranked(request_client, "deepfm", [1003, 1002, 1001, 1000], user="12")
    assert encoder.item_part_rows == start + 4  # known apps: their item parts came from the cache
    mixed = ranked(request_client, "deepfm", [1000, 1004, 1001])
    assert encoder.item_part_rows == start + 5  # only the new one
    assert dict(mixed)["a1000"] == pytest.approx(dict(first)["a1000"], abs=1e-7)
    assert dict(again) != dict(first)  # another user: the same cached item parts, other CTRs


def test_without_an_item_cache_every_candidate_runs_the_item_graph(models_root: Path) -> None:
    for client in _client(models_root, "nocache.db", item_cache_size=0):
        encoder = loaded(client, "deepfm").encoder
        assert encoder.item_cache is None
        ranked(client, "deepfm", [1, 2, 3])
        ranked(client, "deepfm", [1, 2, 3])
        assert encoder.item_part_rows == 6


def test_int8_is_served_only_when_asked_and_its_gate_passed(models_root: Path) -> None:
    manifest = loaded_manifest(models_root / "models" / "deepfm")
    assert manifest.serving is not None and manifest.serving.int8 is not None
    usable = manifest.serving.int8.usable
    assert (models_root / "models" / "deepfm" / INT8_ONNX).is_file() == usable
    for client in _client(models_root, "int8.db", int8=True):
        assert loaded(client, "deepfm").graph == ("request-int8" if usable else "request")
        assert ranked(client, "deepfm", [1, 2, 3])


def loaded_manifest(path: Path) -> Manifest:
    from model.bundle import read_manifest

    return read_manifest(path)
