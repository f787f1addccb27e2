"""POST /rank: exact scores and order, ties, CTR x bid, top_k, ids filled into fields, the served list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from model.encoder import FeatureEncoder
from service.app import create_app
from service.experiments.router import bucket_of
from service.settings import ServiceSettings
from tests.service.bundles import (
    item_features,
    item_weights_for_order,
    lr_ctr,
    random_weights,
    write_lr_bundle,
)
from tests.service.conftest import ADMIN, ListSink, fifty_fifty, rank_body


def ranked(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["app_id"] for item in response.json()["items"]]


def only_item_weights(tmp_path: Path, encoder: FeatureEncoder, logits: dict[str, float]) -> ServiceSettings:
    root = tmp_path / "ordered"
    write_lr_bundle(
        root / "lr", encoder, item_weights_for_order(encoder, list(logits), list(logits.values()))
    )
    return ServiceSettings(models_dir=root, database_url=f"sqlite:///{tmp_path / 'o.db'}")


def test_scores_match_the_numpy_oracle_of_the_graph(client: TestClient, encoder: FeatureEncoder) -> None:
    body = rank_body(30, user="7")
    body["context"]["city"] = "nowhere"  # out of vocabulary
    response = client.post("/rank", json=body).json()
    assert response["model"] == "lr" and response["version"] == "20260101.000000"
    columns: dict[str, Any] = {name: np.array([value] * 30) for name, value in body["context"].items()}
    columns["user"] = np.array(["7"] * 30)  # user_id fills the user field
    columns["item"] = np.array([f"a{i}" for i in range(30)])  # app_id fills the item field
    for name in item_features(0):
        columns[name] = np.array([item_features(i)[name] for i in range(30)])
    expected = lr_ctr(encoder.transform(columns, 30), encoder, random_weights(encoder, seed=1), 0.0)
    got = {item["app_id"]: item["ctr"] for item in response["items"]}
    np.testing.assert_allclose([got[f"a{i}"] for i in range(30)], expected, rtol=1e-6)
    assert [item["position"] for item in response["items"]] == list(range(1, 31))
    scores = [item["score"] for item in response["items"]]
    assert scores == sorted(scores, reverse=True)


def test_order_follows_the_model_and_ties_break_by_app_id(tmp_path: Path, encoder: FeatureEncoder) -> None:
    logits = {"a5": 3.0, "a1": 1.0, "a9": 1.0, "a3": 1.0, "a7": -2.0}
    with TestClient(create_app(only_item_weights(tmp_path, encoder, logits))) as client:
        candidates = [{"app_id": a} for a in logits]
        body = {"user_id": "u", "candidates": candidates}
        assert ranked(client.post("/rank", json=body)) == ["a5", "a1", "a3", "a9", "a7"]
        candidates.reverse()  # the input order does not matter
        assert ranked(client.post("/rank", json=body)) == ["a5", "a1", "a3", "a9", "a7"]


def test_ctr_times_bid_and_top_k(tmp_path: Path, encoder: FeatureEncoder) -> None:
    logits = {"a1": 2.0, "a2": 0.0, "a3": -1.0}
    with TestClient(create_app(only_item_weights(tmp_path, encoder, logits))) as client:
        bids = {"a1": 1.0, "a2": 3.0, "a3": 10.0}
        body: dict[str, Any] = {
            "user_id": "u",
            "candidates": [{"app_id": a, "bid": b} for a, b in bids.items()],
        }
        assert ranked(client.post("/rank", json=body)) == ["a1", "a2", "a3"]
        answer = client.post("/rank", json=body | {"objective": "ctr_bid", "top_k": 2}).json()
        assert answer["objective"] == "ctr_bid"
        assert [i["app_id"] for i in answer["items"]] == ["a3", "a2"]  # 10 x 0.269 > 3 x 0.5 > 1 x 0.881
        for item in answer["items"]:
            assert abs(item["score"] - item["ctr"] * bids[item["app_id"]]) < 1e-6
        np.testing.assert_allclose(answer["items"][1]["ctr"], 0.5, rtol=1e-6)
        assert ranked(client.post("/rank", json=body | {"top_k": 99})) == ["a1", "a2", "a3"]


def test_experiment_objective_is_the_default(client: TestClient) -> None:
    client.put("/experiments/bids", json=fifty_fifty(objective="ctr_bid"), headers=ADMIN)
    body = rank_body(3, experiment="bids")
    for candidate in body["candidates"]:
        candidate["bid"] = 2.0
    answer = client.post("/rank", json=body).json()
    assert (answer["experiment"], answer["objective"]) == ("bids", "ctr_bid")
    assert client.post("/rank", json=body | {"objective": "ctr"}).json()["objective"] == "ctr"


def test_served_list_is_submitted_with_what_was_served(client: TestClient, sink: ListSink) -> None:
    client.put("/experiments/default", json=fifty_fifty(), headers=ADMIN)
    body = rank_body(6, top_k=4)
    answer = client.post("/rank", json=body).json()
    served = sink.lists[-1]
    assert served.request_id == answer["request_id"]
    assert (served.experiment, served.arm, served.model, served.version) == (
        "default", answer["arm"], answer["model"], answer["version"]
    )  # fmt: skip
    assert 0 <= served.bucket < 10_000 and served.user_id == "3" and served.objective == "ctr"
    assert [served.app_ids[i] for i in served.order] == [i["app_id"] for i in answer["items"]]
    assert served.ctr.shape == (6,) and served.ctr.dtype == np.float32
    assert dict(served.context) == body["context"]


def test_sticky_across_two_app_instances(settings: ServiceSettings) -> None:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        first.put("/experiments/default", json=fifty_fifty(), headers=ADMIN)
        second.app.state.service.sync.refresh_experiments()  # type: ignore[attr-defined]
        for user in (f"user-{i}" for i in range(100)):
            body = rank_body(2, user=user)
            arms = {first.post("/rank", json=body).json()["arm"] for _ in range(10)}
            assert arms == {second.post("/rank", json=body).json()["arm"]}
        arms = {first.post("/rank", json=rank_body(2, user=f"user-{i}")).json()["arm"] for i in range(100)}
        assert arms == {"control", "treatment"}


def expected_arm(experiment: dict[str, Any], user_id: str) -> str:
    """The arm the published recipe gives: the user's hash bucket looked up in the allocation."""
    bucket = bucket_of(experiment["salt"], user_id)
    [arm] = [a for a, ranges in experiment["allocation"].items() if any(s <= bucket < e for s, e in ranges)]
    return str(arm)


def test_same_arm_across_1000_calls(client: TestClient) -> None:
    experiment = client.put("/experiments/default", json=fifty_fifty(), headers=ADMIN).json()
    users = [f"sticky-{i}" for i in range(100)]
    arms = {
        user: {client.post("/rank", json=rank_body(2, user=user)).json()["arm"] for _ in range(10)}
        for user in users
    }
    assert all(
        arms[user] == {expected_arm(experiment, user)} for user in users
    )  # 1,000 calls, each as hashed
    assert set().union(*arms.values()) == {"control", "treatment"}


def test_models_endpoint_lists_bundles(client: TestClient) -> None:
    models = client.get("/models").json()
    assert [m["name"] for m in models] == ["lr", "lr2"]
    assert models[0]["version"] == "20260101.000000" and len(models[0]["schema_hash"]) == 64
    assert models[0]["metrics"] == {"test": {"auc": 0.5}} and models[0]["loaded_at"]
