"""The report end to end on both stores: figures against numpy / scipy on the same simulated users, the
SRM check, the daily breakdown, the routes (JSON and PNG) and ``apprank report``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import orjson
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from scipy import stats
from typer.testing import CliRunner

from pipeline.report_cli import register
from service.errors import add_error_handlers
from service.events.log import EventLog
from service.events.models import EventIn
from service.events.store import SqlEventStore
from service.rank.served import ServedList
from service.report.build import EPOCH, ExperimentArms, build_report
from service.report.models import ExperimentReport
from service.report.routes import ExperimentLookup, report_router
from tests.service.test_events_support import StoreTarget, event_in, served_list

pytest_plugins = ["tests.service.test_events_support"]
DAY = 86400
FIFTY_FIFTY = ExperimentArms("exp", {"control": 50.0, "treatment": 50.0}, "control")


@dataclass
class Truth:
    """What the simulation logged, kept independently of the store: (arm, user, day) -> [I, D]."""

    counts: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)

    def users(self, arm: str, day: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        per_user: dict[str, list[int]] = {}
        for (a, user, d), (i, dl) in self.counts.items():
            if a == arm and (day is None or d == day):
                pair = per_user.setdefault(user, [0, 0])
                pair[0] += i
                pair[1] += dl
        array = np.array(list(per_user.values()), dtype=float).reshape(-1, 2)
        return array[:, 0], array[:, 1]


def simulate(store: SqlEventStore, users: dict[str, int], days: int = 3, seed: int = 0) -> tuple[Truth, int]:
    """Users of each arm visit on random days, see 3 apps per visit and download some; returns the truth."""
    rng = np.random.default_rng(seed)
    first_day = int(time.time() // DAY) - days
    truth, served, events = Truth(), list[ServedList](), list[EventIn]()
    lift = {"control": 1.0, "treatment": 1.3}
    for arm, count in users.items():
        for u in range(count):
            user, p = f"{arm[0]}{u}", min(0.9, rng.beta(1.0, 9.0) * lift.get(arm, 1.0))
            for day in range(first_day, first_day + days):
                for visit in range(int(rng.poisson(0.8))):
                    request, ts = f"{user}-{day}-{visit}", day * DAY + 3600.0 * (1 + visit)
                    served.append(served_list(request, user_id=user, arm=arm, ts=ts))
                    shown = int(rng.integers(1, 4))
                    downloads = int(rng.binomial(shown, p))
                    for k, app in enumerate(("c", "b", "a")[:shown]):
                        events.append(
                            event_in(len(events), request_id=request, app_id=app, user_id=user, ts=ts + 1)
                        )
                        if k < downloads:
                            events.append(
                                event_in(len(events), "download", request, app, user_id=user, ts=ts + 2)
                            )
                    counts = truth.counts.setdefault((arm, user, day), [0, 0])
                    counts[0] += shown
                    counts[1] += downloads
    store.write_served(served)
    store.record_events([events[i : i + 500] for i in range(0, len(events), 500)], time.time())
    return truth, first_day


def delta_se(impressions: np.ndarray, downloads: np.ndarray) -> float:
    ctr = downloads.sum() / impressions.sum()
    return float(stats.sem(downloads - ctr * impressions) / impressions.mean())


@pytest.fixture
def simulated(store: SqlEventStore) -> tuple[SqlEventStore, Truth, int]:
    truth, first_day = simulate(store, {"control": 120, "treatment": 120})
    return store, truth, first_day


def test_arm_figures_match_numpy_on_the_same_users(simulated: tuple[SqlEventStore, Truth, int]) -> None:
    store, truth, _ = simulated
    report = build_report(store, FIFTY_FIFTY)
    z = stats.norm.ppf(0.975)
    for arm in report.arms:
        impressions, downloads = truth.users(arm.arm)
        ctr, cvr = downloads.sum() / impressions.sum(), downloads.mean()
        assert (arm.users, arm.impressions, arm.downloads) == (
            len(impressions),
            impressions.sum(),
            downloads.sum(),
        )
        assert arm.ctr == pytest.approx(ctr, rel=1e-12) and arm.cvr == pytest.approx(cvr, rel=1e-12)
        assert arm.ctr_se == pytest.approx(delta_se(impressions, downloads), rel=1e-9)
        assert arm.cvr_se == pytest.approx(stats.sem(downloads), rel=1e-9)
        assert (arm.ctr_ci.low, arm.ctr_ci.high) == pytest.approx(
            (ctr - z * arm.ctr_se, ctr + z * arm.ctr_se)
        )
    assert [arm.control for arm in report.arms] == [True, False]


def test_lift_over_the_control_matches_a_z_test(simulated: tuple[SqlEventStore, Truth, int]) -> None:
    store, truth, _ = simulated
    report = build_report(store, FIFTY_FIFTY)
    by_metric = {lift.metric: lift for lift in report.lifts}
    (ci, di), (ct, dt) = truth.users("control"), truth.users("treatment")
    ctr_c, ctr_t = di.sum() / ci.sum(), dt.sum() / ct.sum()
    z = (ctr_t - ctr_c) / math.hypot(delta_se(ct, dt), delta_se(ci, di))
    assert by_metric["ctr"].lift == pytest.approx(ctr_t / ctr_c - 1, rel=1e-9)
    assert by_metric["ctr"].p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-6)
    # CVR: a difference of per-user means; Welch's statistic is the same z, read on the normal tail
    welch = stats.ttest_ind(dt, di, equal_var=False)
    assert by_metric["cvr"].p_value == pytest.approx(2 * stats.norm.sf(abs(welch.statistic)), rel=1e-9)
    p_value = by_metric["ctr"].p_value
    assert p_value is not None and by_metric["ctr"].significant == (p_value < 0.05)


def test_daily_breakdown_and_day_window(simulated: tuple[SqlEventStore, Truth, int]) -> None:
    store, truth, first_day = simulated
    report = build_report(store, FIFTY_FIFTY)
    assert [d.day for d in report.daily] == [EPOCH + timedelta(days=first_day + k) for k in range(3)]
    middle = report.daily[1]
    for arm in middle.arms:
        impressions, downloads = truth.users(arm.arm, first_day + 1)
        assert (arm.users, arm.impressions, arm.downloads) == (
            len(impressions),
            impressions.sum(),
            downloads.sum(),
        )
    assert {(lift.arm, lift.metric) for lift in middle.lifts} == {("treatment", "ctr"), ("treatment", "cvr")}
    one_day = build_report(store, FIFTY_FIFTY, start=middle.day, end=middle.day)
    assert [d.day for d in one_day.daily] == [middle.day]
    assert [(a.arm, a.users) for a in one_day.arms] == [(a.arm, a.users) for a in middle.arms]
    with pytest.raises(ValueError, match="after end"):
        build_report(store, FIFTY_FIFTY, start=date(2026, 2, 2), end=date(2026, 2, 1))


def test_srm_is_flagged_on_a_skewed_split_only(store: SqlEventStore) -> None:
    simulate(store, {"control": 140, "treatment": 60}, days=1, seed=1)
    skewed = build_report(store, FIFTY_FIFTY).srm
    observed = [skewed.observed_users["control"], skewed.observed_users["treatment"]]
    assert skewed.flagged and skewed.p_value == pytest.approx(stats.chisquare(observed).pvalue, rel=1e-9)
    as_configured = build_report(
        store, ExperimentArms("exp", {"control": 70.0, "treatment": 30.0}, "control")
    )
    assert not as_configured.srm.flagged


def test_arms_outside_the_configuration_are_reported_and_flagged(store: SqlEventStore) -> None:
    simulate(store, {"control": 30, "treatment": 30, "rogue": 5}, days=1, seed=2)
    report = build_report(store, FIFTY_FIFTY)
    assert [(a.arm, a.weight) for a in report.arms] == [
        ("control", 50.0),
        ("treatment", 50.0),
        ("rogue", None),
    ]
    assert report.srm.flagged and "rogue" in (report.srm.note or "")


@pytest.fixture
def report_client(event_log: EventLog) -> Iterator[TestClient]:
    simulate(event_log.store, {"control": 40, "treatment": 40}, days=2, seed=3)
    app = FastAPI()
    add_error_handlers(app)
    lookup: ExperimentLookup = lambda name: FIFTY_FIFTY if name == "exp" else None  # noqa: E731
    app.include_router(report_router(lambda: event_log, lambda: lookup))
    with TestClient(app) as client:
        yield client


def test_report_route_serves_the_report_and_its_chart(report_client: TestClient, event_log: EventLog) -> None:
    response = report_client.get("/experiments/exp/report")
    assert response.status_code == 200
    served = ExperimentReport.model_validate(response.json())
    direct = build_report(event_log.store, FIFTY_FIFTY)
    assert served.model_dump(exclude={"generated_at"}) == direct.model_dump(exclude={"generated_at"})
    chart = report_client.get("/experiments/exp/report.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    ("url", "status", "loc"),
    [
        ("/experiments/nope/report", 404, ["path", "name"]),
        ("/experiments/exp/report?start=2026-02-02&end=2026-02-01", 422, ["query", "start"]),
        ("/experiments/exp/report?start=yesterday", 422, ["query", "start"]),
    ],
)
def test_report_route_refuses_bad_requests(
    report_client: TestClient, url: str, status: int, loc: list[str]
) -> None:
    response = report_client.get(url)
    assert response.status_code == status
    [detail] = response.json()["detail"]
    assert detail["loc"] == loc and detail["msg"] and set(detail) == {"loc", "msg", "type"}


def test_cli_report_prints_tables_json_and_a_chart(
    store: SqlEventStore, target: StoreTarget, tmp_path: object
) -> None:
    from pathlib import Path

    simulate(store, {"control": 30, "treatment": 30}, days=2, seed=4)
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a Typer with one command would make it the root command
    base = ["report", "--experiment", "exp", "--db", target.url, "--prefix", target.prefix]
    runner = CliRunner()
    png = Path(str(tmp_path)) / "lift.png"
    table = runner.invoke(app, [*base, "--arms", "control:50,treatment:50", "--png", str(png)])
    assert table.exit_code == 0, table.output
    assert "treatment" in table.output and "SRM check" in table.output and png.read_bytes()[:4] == b"\x89PNG"
    as_json = runner.invoke(app, [*base, "--arms", "control:50,treatment:50", "--json"])
    report = ExperimentReport.model_validate(orjson.loads(as_json.output))
    assert [a.arm for a in report.arms] == ["control", "treatment"]
    unknown = runner.invoke(app, base)
    assert unknown.exit_code == 2 and "give --arms" in unknown.output
    bad = runner.invoke(app, [*base, "--arms", "control=50"])
    assert bad.exit_code == 2 and "ARM:WEIGHT" in bad.output


def test_cli_report_reads_the_experiment_from_the_service_store(
    store: SqlEventStore, target: StoreTarget
) -> None:
    from service.experiments.admin import _next
    from service.experiments.models import ExperimentSpec
    from service.experiments.store import ExperimentStore

    simulate(store, {"control": 20, "treatment": 20}, days=1, seed=5)
    experiments = ExperimentStore(store.db, target.prefix)
    experiments.migrate()
    spec = ExperimentSpec.model_validate(
        {
            "arms": [
                {"name": "control", "model": "lr", "weight": 60},
                {"name": "treatment", "model": "lr2", "weight": 40},
            ],
            "control": "control",
        }
    )
    experiments.save("exp", "test", lambda before: _next("exp", spec, before))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(
        app, ["report", "--experiment", "exp", "--db", target.url, "--prefix", target.prefix, "--json"]
    )
    assert result.exit_code == 0, result.output
    report = ExperimentReport.model_validate(orjson.loads(result.output))
    assert [(a.arm, a.weight) for a in report.arms] == [("control", 60.0), ("treatment", 40.0)]
