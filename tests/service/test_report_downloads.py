"""The report's download rule over HTTP on both stores (issue 16, case 7): a download counts only when an
impression of the same (request, app) is stored, whichever was posted first, so CTR stays in [0, 1]
whatever clients send; ``export-training`` labels the same downloads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from model.schema import FeatureSchema
from pipeline.export import export_training
from service.errors import add_error_handlers
from service.events.log import EventLog
from service.events.routes import events_router
from service.report.build import ExperimentArms
from service.report.routes import ExperimentLookup, report_router
from tests.service.test_events_support import event, served_list

pytest_plugins = ["tests.service.test_events_support"]
ARMS = ExperimentArms("exp", {"control": 50.0, "treatment": 50.0}, "control")
TREATED = 13  # requests of the treatment arm, each returning apps a, b and c


@pytest.fixture
def client(event_log: EventLog) -> Iterator[TestClient]:
    for k in range(TREATED):
        event_log.sink.submit(served_list(f"t{k}", user_id=f"t{k % 4}", arm="treatment"))
    for k in range(5):
        event_log.sink.submit(served_list(f"c{k}", user_id=f"c{k}"))
    event_log.sink.submit(served_list("ghost", user_id="ghost"))
    app = FastAPI()
    add_error_handlers(app)
    lookup: ExperimentLookup = lambda name: ARMS if name == "exp" else None  # noqa: E731
    app.include_router(events_router(lambda: event_log))
    app.include_router(report_router(lambda: event_log, lambda: lookup))
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, events: list[dict[str, Any]]) -> None:
    response = client.post("/events", json={"events": events})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events) and not response.json()["rejected"]


def treated(index: int, kind: str, k: int, app: str) -> dict[str, Any]:
    return event(index, kind, f"t{k}", app, user_id=f"t{k % 4}")


def post_traffic(client: TestClient) -> None:
    """Treatment: 29 downloads posted for 26 impressions (the issue's CTR of 1.115); control: 5 and 2."""
    downloads_first = [treated(k, "download", k, "b") for k in range(3)]  # their impressions come next
    never_shown = [treated(100 + k, "download", k, "c") for k in range(TREATED)]
    post(client, downloads_first + never_shown)
    shown = [
        treated(200 + 2 * k + j, "impression", k, app) for k in range(TREATED) for j, app in enumerate("ab")
    ]
    post(client, shown + [treated(300 + k, "download", k, "a") for k in range(TREATED)])
    control = [event(400 + k, "impression", f"c{k}", "a", user_id=f"c{k}") for k in range(5)]
    control += [event(410 + k, "download", f"c{k}", "a", user_id=f"c{k}") for k in range(2)]
    control += [event(420, "download", "ghost", "b", user_id="ghost")]  # this user's only event
    post(client, control)


def figures(client: TestClient) -> dict[str, Any]:
    response = client.get("/experiments/exp/report")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def test_downloads_without_an_impression_are_not_counted(client: TestClient) -> None:
    post_traffic(client)
    report = figures(client)
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert {name: (a["users"], a["impressions"], a["downloads"]) for name, a in arms.items()} == {
        "control": (5, 5, 2),  # the user with a stray download only is no user of the arm
        "treatment": (4, 26, 16),  # 13 downloads of a, the 3 of b posted before their impressions
    }
    assert arms["treatment"]["ctr"] == pytest.approx(16 / 26)
    days = [arm for day in report["daily"] for arm in day["arms"]]
    assert days and all(0 <= arm["ctr"] <= 1 and arm["downloads"] <= arm["impressions"] for arm in days)
    assert report["srm"]["observed_users"] == {"control": 5, "treatment": 4}


def test_a_download_counts_once_its_impression_arrives(client: TestClient) -> None:
    post_traffic(client)
    post(client, [treated(500, "impression", 0, "c")])
    arms = {arm["arm"]: arm for arm in figures(client)["arms"]}
    assert (arms["treatment"]["impressions"], arms["treatment"]["downloads"]) == (27, 17)


def test_export_labels_the_downloads_the_report_counts(
    client: TestClient, event_log: EventLog, tmp_path: Path
) -> None:
    post_traffic(client)
    schema = FeatureSchema.model_validate(
        {
            "name": "served",
            "user_id_field": "uid",
            "item_id_field": "app",
            "fields": [
                {"name": "uid", "kind": "categorical", "source": "user"},
                {"name": "app", "kind": "categorical", "source": "item"},
                {"name": "category", "kind": "categorical", "source": "item"},
            ],
        }
    )
    now = time.time()
    summary = export_training(event_log.store, "exp", now - 3600, now + 3600, tmp_path / "rows.csv", schema)
    arms = figures(client)["arms"]
    assert summary.rows == sum(arm["impressions"] for arm in arms) == 31
    assert summary.positives == sum(arm["downloads"] for arm in arms) == 18


def test_a_download_counts_on_the_day_of_its_impression(event_log: EventLog) -> None:
    """Shown yesterday, downloaded (or so the client says) today: yesterday's conversion, no CTR above 1."""
    yesterday = (time.time() // 86400 - 1) * 86400 + 43200
    event_log.sink.submit(served_list("late", user_id="c1", ts=yesterday))
    event_log.sink.submit(served_list("now", user_id="c1"))
    app = FastAPI()
    add_error_handlers(app)
    lookup: ExperimentLookup = lambda name: ARMS if name == "exp" else None  # noqa: E731
    app.include_router(events_router(lambda: event_log))
    app.include_router(report_router(lambda: event_log, lambda: lookup))
    with TestClient(app) as client:
        post(client, [event(1, "impression", "late", "a", user_id="c1", ts=yesterday + 60)])
        post(client, [event(2, "download", "late", "a", user_id="c1")])
        post(client, [event(3, "impression", "now", "a", user_id="c1")])
        report = figures(client)
    days = [
        (day["day"], [(a["impressions"], a["downloads"]) for a in day["arms"]]) for day in report["daily"]
    ]
    assert [counts for _, counts in days] == [[(1, 1)], [(1, 0)]]
    control = report["arms"][0]
    assert (control["arm"], control["impressions"], control["downloads"], control["ctr"]) == (
        "control",
        2,
        1,
        0.5,
    )
