"""A rollback over real HTTP reaches both uvicorn workers within a second (the ``models`` counter)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from model.encoder import FeatureEncoder
from tests.conftest import wait_until
from tests.service.conftest import ADMIN, rank_body
from tests.service.test_e2e import fresh_post, server
from tests.service.test_versions import V1, V2, publish_lr

pytestmark = pytest.mark.slow
__all__ = ["server"]  # the two-worker server fixture


@pytest.fixture
def two_versions(models_dir: Path, encoder: FeatureEncoder) -> Path:
    """``lr`` with versions V1 and V2, V2 current, before the server starts."""
    publish_lr(models_dir / "lr", encoder, V2, seed=5)
    return models_dir


def served_versions(url: str) -> set[str]:
    return {fresh_post(url, rank_body(3)).json()["version"] for _ in range(20)}


def test_a_rollback_reaches_every_worker_within_a_second(two_versions: Path, server: str) -> None:
    assert served_versions(server) == {V2}
    response = httpx.post(f"{server}/models/lr/rollback", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["after"] == V1
    wait_until(lambda: served_versions(server) == {V1}, 1.0, "V1 in both workers", interval=0.02)
    models = httpx.get(f"{server}/models").json()
    assert {v["version"]: v["current"] for v in models[0]["versions"]} == {V1: True, V2: False}
