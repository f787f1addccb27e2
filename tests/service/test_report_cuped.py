"""The report's SQL on both stores: per-user moments with the CUPED pre-period against the same users
counted in Python, and the per-day cumulative rows against reports cut at each day."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.events.store import SqlEventStore
from service.report.build import EPOCH, AnalysisOptions, ExperimentArms, build_report
from service.report.compare import thetas
from service.report.sums import accumulate, read_arm_days
from tests.service.report_events import FIRST, LOOKBACK, Logged, simulate

pytest_plugins = ["tests.service.test_events_support"]
ARMS = ExperimentArms("exp", {"control": 50.0, "treatment": 50.0}, "control")


@pytest.fixture
def loaded(store: SqlEventStore) -> tuple[SqlEventStore, Logged]:
    logged = simulate()
    store.insert_events_unchecked(logged.rows)
    store.rebuild_user_days()
    return store, logged


def test_moments_with_the_pre_period_match_the_users(loaded: tuple[SqlEventStore, Logged]) -> None:
    store, logged = loaded
    histories = accumulate(read_arm_days(store, "exp", 0, 10**7, LOOKBACK))
    for arm in ("control", "treatment"):
        for day in range(FIRST, FIRST + 4):
            ours, truth = histories[arm].as_of(day), logged.moments(arm, day)
            assert (ours.n, ours.with_history) == (truth.n, truth.with_history)
            assert ours.s == pytest.approx(truth.s, rel=1e-12)
            assert ours.q == pytest.approx(truth.q, rel=1e-12)
    assert 0 < histories["control"].moments[-1].with_history < histories["control"].moments[-1].n


def test_report_applies_cuped_with_the_pooled_theta(loaded: tuple[SqlEventStore, Logged]) -> None:
    store, logged = loaded
    report = build_report(store, ARMS)
    last = FIRST + 3
    truth = thetas({arm: logged.moments(arm, last) for arm in ("control", "treatment")}, True)
    assert report.analysis is not None and report.analysis.cuped_lookback_days == LOOKBACK
    for cuped in report.analysis.cuped:
        assert cuped.applied and cuped.theta == pytest.approx(truth[cuped.metric].theta, rel=1e-9)
        assert 0 < cuped.variance_reduction < 1
    assert all(lift.cuped is not None for lift in report.lifts)
    with_history = {arm.arm: arm.users_with_history for arm in report.arms}
    assert with_history == {arm: logged.moments(arm, last).with_history for arm in ("control", "treatment")}
    off = build_report(store, ARMS, options=AnalysisOptions(cuped_lookback_days=0))
    assert all(lift.cuped is None for lift in off.lifts)
    assert [lift.sequential_ci for lift in off.lifts] == [lift.sequential_ci for lift in report.lifts]


def test_each_days_cumulative_lifts_are_the_report_cut_at_that_day(
    loaded: tuple[SqlEventStore, Logged],
) -> None:
    store, _ = loaded
    report = build_report(store, ARMS)
    assert [day.day for day in report.daily] == [EPOCH + timedelta(days=FIRST + k) for k in range(4)]
    for day in report.daily:
        cut = build_report(store, ARMS, end=day.day)
        assert [lift.model_dump() for lift in day.cumulative] == [lift.model_dump() for lift in cut.lifts]
    assert report.daily[-1].cumulative == report.lifts
    widths = [
        lift.sequential_ci.high - lift.sequential_ci.low
        for day in report.daily
        for lift in day.cumulative
        if lift.metric == "ctr" and lift.sequential_ci.high is not None and lift.sequential_ci.low is not None
    ]
    assert widths[-1] < widths[0] / 2  # four times the users: the sequence narrows
