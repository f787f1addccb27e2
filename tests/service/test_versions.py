"""Model versions: ``models/NAME/VERSION/`` with a ``current`` pointer, pins, promote, rollback, audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.bundle import BundleError, read_manifest
from model.encoder import FeatureEncoder
from model.versions import (
    CURRENT,
    VersionError,
    current_version,
    is_flat,
    list_versions,
    previous_version,
    prune,
    publish,
    set_current,
)
from tests.service.bundles import random_weights, write_lr_bundle
from tests.service.conftest import ADMIN, fifty_fifty, rank_body

V1, V2, V3 = "20260101.000000", "20260201.000000", "20260301.000000"


def publish_lr(
    model_dir: Path,
    encoder: FeatureEncoder,
    version: str,
    seed: int,
    keep: int = 5,
    protect: set[str] | None = None,
) -> Path:
    """Write an LR bundle aside (hidden: no reload sees it) and publish it as ``version``."""
    staging = write_lr_bundle(
        model_dir.parent / f".new-{version}", encoder, random_weights(encoder, seed), version=version
    )
    return publish(model_dir, staging, version, keep, protect or set())


def versions_of(client: TestClient, name: str = "lr") -> dict[str, bool]:
    info = next(m for m in client.get("/models").json() if m["name"] == name)
    return {v["version"]: v["current"] for v in info["versions"]}


def served_version(client: TestClient, user: str = "3") -> str:
    return str(client.post("/rank", json=rank_body(3, user=user)).json()["version"])


def test_a_flat_bundle_becomes_the_first_version_at_its_first_publish(
    models_dir: Path, encoder: FeatureEncoder
) -> None:
    lr = models_dir / "lr"
    assert is_flat(lr) and [e.version for e in list_versions(lr)] == [V1] and current_version(lr) == V1
    publish_lr(lr, encoder, V2, seed=5)
    assert not is_flat(lr)
    assert [e.version for e in list_versions(lr)] == [V1, V2]
    assert (lr / CURRENT).read_text().strip() == V2 and previous_version(lr) == V1
    assert read_manifest(lr / V1).version == V1  # the flat bundle moved in whole


def test_publish_keeps_the_last_k_versions_and_never_deletes_the_current_one(
    tmp_path: Path, encoder: FeatureEncoder
) -> None:
    model = tmp_path / "models" / "lr"
    for index, version in enumerate([V1, V2, V3]):
        publish_lr(model, encoder, version, seed=index, keep=2)
    assert [e.version for e in list_versions(model)] == [V2, V3]
    set_current(model, V2)  # a rollback: the current version is older than the newest
    assert prune(model, 1) == []
    assert [e.version for e in list_versions(model)] == [V2, V3]
    publish_lr(model, encoder, "20260401.000000", seed=4, keep=1)
    assert [e.version for e in list_versions(model)] == ["20260401.000000"]
    publish_lr(model, encoder, "20260501.000000", seed=5, keep=1)
    publish_lr(model, encoder, "20260601.000000", seed=7, keep=1, protect={"20260501.000000"})
    assert [e.version for e in list_versions(model)] == ["20260501.000000", "20260601.000000"]  # a pin
    with pytest.raises(VersionError, match="exists already"):
        publish_lr(model, encoder, "20260601.000000", seed=6)
    with pytest.raises(VersionError, match="no version"):
        set_current(model, V1)
    with pytest.raises(VersionError, match="bad version name"):
        set_current(model, "../lr2")


def test_train_into_a_versioned_directory_adds_a_version(models_dir: Path, encoder: FeatureEncoder) -> None:
    lr = models_dir / "lr"
    publish_lr(lr, encoder, V2, seed=5)
    write_lr_bundle(
        lr, encoder, random_weights(encoder, seed=6), version=V3
    )  # what `apprank train --out` does
    assert [e.version for e in list_versions(lr)] == [V1, V2, V3] and current_version(lr) == V3


def test_every_kept_version_loads_and_the_current_one_serves(
    client: TestClient, models_dir: Path, encoder: FeatureEncoder
) -> None:
    publish_lr(models_dir / "lr", encoder, V2, seed=5)
    reload = client.post("/models/reload", headers=ADMIN).json()
    assert sorted(reload["loaded"]) == [f"lr@{V1}", f"lr@{V2}"] and reload["current"]["lr"] == V2
    assert versions_of(client) == {V1: False, V2: True}
    assert "path" not in client.get("/models").json()[0]
    body = fifty_fifty("lr", f"lr@{V1}")
    assert client.put("/experiments/default", json=body, headers=ADMIN).status_code in (200, 201)
    served = {served_version(client, user=f"u{i}") for i in range(40)}
    assert served == {V1, V2}  # one arm follows current, the other pins the first version


def test_a_pin_to_an_unknown_version_is_a_422_naming_the_arm(client: TestClient) -> None:
    response = client.put("/experiments/default", json=fifty_fifty("lr", "lr@19990101.000000"), headers=ADMIN)
    assert response.status_code == 422
    (issue,) = response.json()["detail"]
    assert issue["loc"] == ["body", "arms", 1, "model"] and issue["type"] == "unknown_version"
    assert "19990101.000000" in issue["msg"] and V1 in issue["msg"]


def test_promote_and_rollback_are_audited_and_serve_at_once(
    client: TestClient, models_dir: Path, encoder: FeatureEncoder
) -> None:
    publish_lr(models_dir / "lr", encoder, V2, seed=5)
    client.post("/models/reload", headers=ADMIN).raise_for_status()
    assert served_version(client) == V2
    back = client.post("/models/lr/rollback", headers=ADMIN)
    assert back.status_code == 200, back.text
    assert (back.json()["before"], back.json()["after"]) == (V2, V1) and served_version(client) == V1
    forward = client.post(
        "/models/lr/promote", json={"version": V2}, headers={"Authorization": "Bearer secret-b"}
    )
    assert forward.status_code == 200 and served_version(client) == V2
    audit = client.get("/models/lr/audit").json()
    assert [(a["action"], a["actor"], a["before"], a["after"]) for a in audit] == [
        ("rollback", "alice", V2, V1),
        ("promote", "bob", V1, V2),
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "loc"),
    [
        ("/models/lr/promote", {"version": V2}, {}, 401, ["header", "authorization"]),
        (
            "/models/lr/promote",
            {"version": V2},
            {"Authorization": "Bearer nope"},
            403,
            ["header", "authorization"],
        ),
        ("/models/nope/promote", {"version": V2}, ADMIN, 404, ["path", "name"]),
        ("/models/lr/promote", {"version": "19990101.000000"}, ADMIN, 422, ["body", "version"]),
        ("/models/lr/promote", {"version": "../lr2"}, ADMIN, 422, ["body", "version"]),
        ("/models/lr/promote", {}, ADMIN, 422, ["body", "version"]),
        ("/models/lr/promote", {"version": V2, "x": 1}, ADMIN, 422, ["body", "x"]),
        ("/models/lr2/rollback", {}, ADMIN, 422, ["body", "version"]),  # one version: nothing before it
        ("/models/lr/promote", {"version": "a\u0000b"}, ADMIN, 422, ["body", "version"]),
        ("/models/lr/promote", {"version": 3}, ADMIN, 422, ["body", "version"]),
        ("/models/l%00r/promote", {"version": V2}, ADMIN, 404, ["path", "name"]),
    ],
)
def test_bad_version_changes_are_4xx_in_the_one_shape(
    client: TestClient,
    models_dir: Path,
    encoder: FeatureEncoder,
    path: str,
    body: dict[str, object],
    headers: dict[str, str],
    status: int,
    loc: list[str],
) -> None:
    publish_lr(models_dir / "lr", encoder, V2, seed=5)
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert current_version(models_dir / "lr") == V2


def test_the_audit_of_an_impossible_name_is_a_404(client: TestClient) -> None:
    response = client.get("/models/l%00r/audit")
    assert response.status_code == 404 and response.json()["detail"][0]["loc"] == ["path", "name"]


def test_a_current_pointer_to_a_broken_version_keeps_the_old_one_serving(
    client: TestClient, models_dir: Path, encoder: FeatureEncoder
) -> None:
    publish_lr(models_dir / "lr", encoder, V2, seed=5)
    client.post("/models/reload", headers=ADMIN).raise_for_status()
    # damaged before it is published: the background sync must never see a sound V3 (a race under load)
    staging = write_lr_bundle(models_dir / f".new-{V3}", encoder, random_weights(encoder, 6), version=V3)
    (staging / "model.onnx").write_bytes(b"garbage")
    publish(models_dir / "lr", staging, V3)
    response = client.post("/models/reload", headers=ADMIN)
    assert response.status_code == 422 and f"lr@{V3}" in response.json()["refused"]
    assert served_version(client) == V2 and versions_of(client) == {V1: False, V2: True}


def test_a_version_directory_whose_manifest_disagrees_is_refused(
    models_dir: Path, encoder: FeatureEncoder
) -> None:
    lr = models_dir / "lr"
    publish_lr(lr, encoder, V2, seed=5)
    (lr / V2).rename(lr / V3)
    assert {e.version for e in list_versions(lr)} == {V1, V3}
    with pytest.raises(BundleError):
        set_current(lr, V2)
