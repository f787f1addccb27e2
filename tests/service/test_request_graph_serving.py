"""Bundles with request-shaped graphs: ``POST /rank`` through them equals ``POST /rank`` through model.onnx.

Real exported bundles (the exporter's own request graphs and parity check) in one models directory,
served twice: with ``request_graph`` on (the default) and off, int8 off. Same candidates, same CTRs and
order (fp32 parity); a known app's item part is taken from the item cache, not computed again
(``item_part_rows``); a model that does not split (xDeepFM) serves its plain graph either way.

int8 (on by default) is served exactly where the export's gate kept ``model.int8.onnx``: the deepfm
bundle's gate is made to pass (its quality bars opened, its heads timed int8 faster), pnn_star's to
refuse on speed alone (the same bars, int8 timed slower), so both outcomes are served here whatever the
random weights' int8 graphs would do; the real bars are tested in tests/model/test_request_graph.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.bundle import INT8_ONNX, Manifest
from model.encoder import FeatureEncoder
from service.app import create_app
from service.rank.registry import LoadedModel
from service.settings import ServiceSettings
from tests.exported import write_exported_bundle
from tests.service.bundles import CONTEXT_VALUES, item_features, synthetic_rows

if TYPE_CHECKING:
    from torch import nn

pytest.importorskip("torch")  # exporting needs the training dependencies; serving itself does not
MODELS = ("deepfm", "pnn_star", "lr", "xdeepfm")
VERSION = "20260801.000000"
INT8_TIMED = {"deepfm": [0.5, 4.0], "pnn_star": [1.5, 9.0]}  # int8 head ms at N = 100, 1,000; fp32: 1, 8


def perturbed(name: str, encoder: FeatureEncoder, seed: int) -> nn.Module:
    import torch

    from model.nets import build_model

    torch.manual_seed(seed)
    params = {} if name == "lr" else {"hidden_units": [32, 32]}
    model = build_model(name, encoder.layout, params)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@contextmanager
def int8_timed_as(int8_ms: list[float] | None) -> Iterator[None]:
    """The int8 gate with its quality bars open and its speed probe saying ``int8_ms`` (fp32: 1 and 8
    ms); unchanged when None."""
    import model.serving_graphs as graphs

    with pytest.MonkeyPatch.context() as patch:
        if int8_ms is not None:
            patch.setattr(graphs, "AUC_SLACK", 1.0)
            patch.setattr(graphs, "TOP10_AGREEMENT", 0.0)
            patch.setattr(graphs, "head_speed", lambda *_: ([100, 1_000], [1.0, 8.0], int8_ms))
        yield


def write_request_bundle(name: str, encoder: FeatureEncoder, out: Path, seed: int) -> None:
    """Export ``name`` (plain graph, then request graphs with int8 and its gate) and write its bundle."""
    rows = synthetic_rows()
    example = encoder.transform(rows, len(rows["user"]))
    labels = (np.random.default_rng(seed).random(len(rows["user"])) < 0.3).astype(np.float32)
    with int8_timed_as(INT8_TIMED.get(name)):
        write_exported_bundle(
            name,
            perturbed(name, encoder, seed),
            encoder,
            example,
            out,
            (example, labels),
            "synthetic",
            version=VERSION,
        )


@pytest.fixture(scope="module")
def models_root(encoder: FeatureEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("request-graphs")
    for seed, name in enumerate(MODELS):
        write_request_bundle(name, encoder, root / "models" / name, seed)
    return root


def _client(root: Path, db: str, **settings: Any) -> Iterator[TestClient]:
    config = ServiceSettings(
        models_dir=root / "models", database_url=f"sqlite:///{root / db}", event_log=False, **settings
    )
    with TestClient(create_app(config)) as client:
        yield client


@pytest.fixture(scope="module")
def request_client(models_root: Path) -> Iterator[TestClient]:
    yield from _client(models_root, "request.db", int8=False)


@pytest.fixture(scope="module")
def default_client(models_root: Path) -> Iterator[TestClient]:
    yield from _client(models_root, "default.db")


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


def test_int8_serves_by_default_exactly_where_its_gate_kept_it(
    models_root: Path, default_client: TestClient
) -> None:
    graphs = {}
    for name in MODELS:
        serving = loaded_manifest(models_root / "models" / name).serving
        assert serving is not None
        kept = (models_root / "models" / name / INT8_ONNX).is_file()
        assert kept == (serving.int8 is not None and serving.int8.usable)
        graphs[name] = loaded(default_client, name).graph
        assert graphs[name] == ("request-int8" if kept else "plain" if name == "xdeepfm" else "request")
    assert graphs["deepfm"] == "request-int8"  # its gate passed and int8 timed faster
    refused = loaded_manifest(models_root / "models" / "pnn_star").serving
    assert refused is not None and refused.int8 is not None and not refused.int8.usable
    assert "not faster" in refused.int8.reason and refused.int8.int8_ms == INT8_TIMED["pnn_star"]
    assert graphs["pnn_star"] == "request" and graphs["lr"] == "request"  # lr: no matrix product


def test_int8_ranks_close_to_fp32_and_turning_it_off_serves_fp32(
    default_client: TestClient, request_client: TestClient, plain_client: TestClient
) -> None:
    apps = list(range(0, 90, 3))
    for user in ("7", "12"):
        int8, fp32 = (
            dict(ranked(default_client, "deepfm", apps, user)),
            dict(ranked(request_client, "deepfm", apps, user)),
        )
        plain = dict(ranked(plain_client, "deepfm", apps, user))
        np.testing.assert_allclose([fp32[a] for a in plain], list(plain.values()), rtol=0, atol=1e-5)
        gaps = np.abs(np.array([int8[a] for a in plain]) - np.array(list(plain.values())))
        assert 0 < gaps.max() < 0.05  # the int8 graph served (not fp32 again), and it scores like it


def loaded_manifest(path: Path) -> Manifest:
    from model.bundle import read_manifest

    return read_manifest(path)
