"""Fixtures of the service tests: fitted frappe-shaped encoder, bundle directories, apps and clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model.encoder import FeatureEncoder
from service.app import create_app
from service.rank.served import ServedList
from service.settings import ServiceSettings
from tests.service.bundles import fit_frappe_encoder, item_features, random_weights, write_lr_bundle

ADMIN = {"Authorization": "Bearer secret-a"}
TOKENS = "alice:secret-a,bob:secret-b"


class ListSink:
    """Keeps every served list (the tests' ServedListSink)."""

    def __init__(self) -> None:
        self.lists: list[ServedList] = []

    def submit(self, served: ServedList) -> None:
        self.lists.append(served)


@pytest.fixture(scope="session")
def encoder() -> FeatureEncoder:
    return fit_frappe_encoder()


def two_bundles(root: Path, encoder: FeatureEncoder) -> Path:
    """Two bundles under ``root``: ``lr`` and ``lr2`` (different weights)."""
    write_lr_bundle(root / "lr", encoder, random_weights(encoder, seed=1), version="20260101.000000")
    write_lr_bundle(root / "lr2", encoder, random_weights(encoder, seed=2), version="20260102.000000")
    return root


def app_settings(root: Path, models_dir: Path) -> ServiceSettings:
    """The app of most service tests, its SQLite database in ``root``. Served lists are written by a thread
    of the worker: a writer process per app costs a Python start-up and is not what these tests are about
    (``test_served_writer_process`` overrides ``settings`` with the default, ``process``)."""
    return ServiceSettings(
        models_dir=models_dir,
        database_url=f"sqlite:///{root / 'apprank.db'}",
        admin_token=TOKENS,
        sync_interval_s=0.1,
        event_writer="thread",
    )


@pytest.fixture
def models_dir(tmp_path: Path, encoder: FeatureEncoder) -> Path:
    """Two bundles: ``lr`` and ``lr2`` (different weights)."""
    return two_bundles(tmp_path / "models", encoder)


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> ServiceSettings:
    return app_settings(tmp_path, models_dir)


@pytest.fixture
def client(settings: ServiceSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def module_client(tmp_path_factory: pytest.TempPathFactory, encoder: FeatureEncoder) -> Iterator[TestClient]:
    """The app of ``client``, started once per module: for tests whose requests change nothing (refused
    input), so that one app started per test is not what their time goes to."""
    root = tmp_path_factory.mktemp("service")
    with TestClient(create_app(app_settings(root, two_bundles(root / "models", encoder)))) as test_client:
        yield test_client


@pytest.fixture
def sink(client: TestClient) -> ListSink:
    """Keeps what /rank hands to the served-list sink from now on (instead of the event log)."""
    kept = ListSink()
    client.app.state.service.ranking.sink = kept  # type: ignore[attr-defined]
    return kept


def rank_body(n: int = 10, user: str = "3", **extra: Any) -> dict[str, Any]:
    """A valid /rank body over apps a0.. a<n-1> with their synthetic features."""
    body: dict[str, Any] = {
        "user_id": user,
        "context": {"daytime": "morning", "weekday": "monday", "country": "Spain"},
        "candidates": [{"app_id": f"a{i}", "features": item_features(i)} for i in range(n)],
    }
    body.update(extra)
    return body


def fifty_fifty(model_a: str = "lr", model_b: str = "lr2", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "arms": [
            {"name": "control", "model": model_a, "weight": 50},
            {"name": "treatment", "model": model_b, "weight": 50},
        ],
        "control": "control",
    }
    spec.update(extra)
    return spec
