"""Experiments over HTTP: admin auth, validation, the salt rule, audit, and propagation to other workers."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.service.conftest import ADMIN, fifty_fifty, rank_body

BOB = {"Authorization": "Bearer secret-b"}


def issue(response: Any) -> tuple[list[Any], str]:
    detail = response.json()["detail"][0]
    return detail["loc"], detail["msg"]


def test_changes_need_the_admin_token(client: TestClient) -> None:
    spec = fifty_fifty()
    no_token = client.put("/experiments/exp", json=spec)
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    assert (
        client.put("/experiments/exp", json=spec, headers={"Authorization": "Basic abc"}).status_code == 401
    )
    assert (
        client.put("/experiments/exp", json=spec, headers={"Authorization": "Bearer nope"}).status_code == 403
    )
    assert client.delete("/experiments/exp").status_code == 401
    assert client.post("/models/reload", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.put("/experiments/exp", json=spec, headers=ADMIN).status_code == 201
    assert client.put("/experiments/exp", json=spec, headers=ADMIN).status_code == 200


def test_no_configured_token_refuses_every_change(settings: ServiceSettings) -> None:
    with TestClient(create_app(settings.model_copy(update={"admin_token": None}))) as client:
        response = client.put("/experiments/exp", json=fifty_fifty(), headers=ADMIN)
        assert response.status_code == 403
        [detail] = response.json()["detail"]
        assert detail["loc"] == ["header", "authorization"] and "APPRANK_ADMIN_TOKEN" in detail["msg"]


def test_validation_names_the_field(client: TestClient) -> None:
    cases = [
        (fifty_fifty() | {"control": "nope"}, "control"),
        (
            {
                "arms": [
                    {"name": "a", "model": "lr", "weight": 60},
                    {"name": "b", "model": "lr2", "weight": 30},
                ],
                "control": "a",
            },
            "sum to 100",
        ),
        (
            {
                "arms": [
                    {"name": "a", "model": "lr", "weight": 110},
                    {"name": "b", "model": "lr2", "weight": -10},
                ],
                "control": "a",
            },
            "weight",
        ),
        (
            {
                "arms": [
                    {"name": "a", "model": "lr", "weight": 50},
                    {"name": "a", "model": "lr2", "weight": 50},
                ],
                "control": "a",
            },
            "duplicate",
        ),
        (
            {
                "arms": [
                    {"name": "a", "model": "lr", "weight": 33.333},
                    {"name": "b", "model": "lr2", "weight": 66.667},
                ],
                "control": "a",
            },
            "two decimals",
        ),
        (fifty_fifty() | {"coverage": 101}, "coverage"),
    ]
    for spec, expected in cases:
        response = client.put("/experiments/exp", json=spec, headers=ADMIN)
        assert response.status_code == 422, spec
        assert expected in str(response.json()["detail"]), (expected, response.json())
    unknown = client.put("/experiments/exp", json=fifty_fifty(model_b="ghost"), headers=ADMIN)
    assert unknown.status_code == 422
    assert issue(unknown) == (["body", "arms", 1, "model"], "no loaded model named 'ghost' (loaded: lr, lr2)")
    bad_name = client.put("/experiments/bad%20name", json=fifty_fifty(), headers=ADMIN)
    assert bad_name.status_code == 422 and issue(bad_name)[0] == ["path", "name"]
    assert client.get("/experiments").json() == []


def test_salt_is_fixed_while_the_experiment_runs(client: TestClient) -> None:
    assert client.put("/experiments/exp", json=fifty_fifty(salt="s1"), headers=ADMIN).status_code == 201
    changed = client.put("/experiments/exp", json=fifty_fifty(salt="s2"), headers=ADMIN)
    assert changed.status_code == 409 and issue(changed)[0] == ["body", "salt"]
    kept = client.put("/experiments/exp", json=fifty_fifty(), headers=ADMIN)  # omitted salt: kept
    assert kept.json()["salt"] == "s1"
    assert client.put("/experiments/exp", json=fifty_fifty(running=False), headers=ADMIN).status_code == 200
    assert client.put("/experiments/exp", json=fifty_fifty(salt="s2"), headers=ADMIN).json()["salt"] == "s2"


def test_ramping_over_http_keeps_the_allocation_minimal(client: TestClient) -> None:
    client.put("/experiments/exp", json=fifty_fifty(), headers=ADMIN)
    spec = fifty_fifty()
    spec["arms"][0]["weight"], spec["arms"][1]["weight"] = 60, 40
    ramped = client.put("/experiments/exp", json=spec, headers=ADMIN).json()
    # treatment gives up its highest 1,000 buckets; control takes them: nobody else moves
    assert ramped["allocation"] == {"control": [[0, 5000], [9000, 10000]], "treatment": [[5000, 9000]]}
    assert ramped["version"] == 2


def test_audit_records_every_change_with_the_token_name(client: TestClient) -> None:
    client.put("/experiments/exp", json=fifty_fifty(), headers=ADMIN)
    client.put("/experiments/exp", json=fifty_fifty(coverage=50), headers=BOB)
    assert client.delete("/experiments/exp", headers=BOB).status_code == 204
    assert client.delete("/experiments/exp", headers=BOB).status_code == 404
    assert client.get("/experiments/exp").status_code == 404
    audit = client.get("/experiments/exp/audit").json()
    assert [(a["action"], a["actor"]) for a in audit] == [
        ("create", "alice"),
        ("update", "bob"),
        ("delete", "bob"),
    ]
    assert audit[0]["before"] is None and audit[0]["after"]["coverage"] == 100
    assert audit[1]["before"]["coverage"] == 100 and audit[1]["after"]["coverage"] == 50
    assert audit[2]["after"] is None
    assert audit[0]["at"] <= audit[1]["at"] <= audit[2]["at"]


def test_a_change_reaches_another_instance_within_a_second(settings: ServiceSettings) -> None:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        assert second.post("/rank", json=rank_body(3)).json()["experiment"] == "none"
        first.put("/experiments/default", json=fifty_fifty(), headers=ADMIN)
        started = time.monotonic()
        while second.post("/rank", json=rank_body(3)).json()["experiment"] != "default":
            assert time.monotonic() - started < 1.0
            time.sleep(0.02)
        assert second.get("/experiments/default").json()["arms"][1]["model"] == "lr2"
