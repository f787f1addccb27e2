"""The report's SQL on both stores: per-user moments with the CUPED pre-period against the same users
counted in Python, and the per-day cumulative rows against reports cut at each day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pytest

from service.events.store import SqlEventStore
from service.report.build import EPOCH, AnalysisOptions, ExperimentArms, build_report
from service.report.compare import thetas
from service.report.sums import Moments, accumulate, read_arm_days

pytest_plugins = ["tests.service.test_events_support"]
DAY = 86400
FIRST = 20_000  # the experiment's first day (days since 1970)
LOOKBACK = 14
ARMS = ExperimentArms("exp", {"control": 50.0, "treatment": 50.0}, "control")


@dataclass
class Logged:
    """Every event row written, and the per-user truth: (arm, user) -> day -> [I, D], user -> [Ip, Dp]."""

    rows: list[tuple[object, ...]] = field(default_factory=list)
    post: dict[tuple[str, str], dict[int, list[int]]] = field(default_factory=dict)
    pre: dict[str, list[int]] = field(default_factory=dict)

    def add(self, experiment: str, arm: str, user: str, day: int, impressions: int, downloads: int) -> None:
        for k in range(impressions):
            request, ts = f"{experiment}-{user}-{day}-{k}", day * DAY + 60.0 * k
            common = (request, "a", user, ts, day, ts, experiment, arm)
            self.rows.append((f"i{len(self.rows)}", "impression", *common))
            if k < downloads:
                self.rows.append((f"d{len(self.rows)}", "download", *common))

    def moments(self, arm: str, last_day: int) -> Moments:
        """The moments of ``arm``'s users as of ``last_day``, counted directly."""
        rows = []
        for (a, user), days in self.post.items():
            counts = [c for d, c in days.items() if d <= last_day]
            if a == arm and counts:
                i, d = (sum(c[0] for c in counts), sum(c[1] for c in counts))
                ip, dp = self.pre.get(user, [0, 0])
                rows.append((d, i, dp, ip, user in self.pre))
        x = np.array([r[:4] for r in rows], dtype=float)
        return Moments(len(rows), sum(r[4] for r in rows), x.sum(axis=0), x.T @ x)


def simulate(seed: int = 0, users: int = 80, days: int = 4) -> Logged:
    """Users who join on some day of the experiment, with history in another experiment around it."""
    rng = np.random.default_rng(seed)
    logged = Logged()
    for u in range(users):
        user, arm = f"u{u}", ("control", "treatment")[u % 2]
        joined, activity, p = FIRST + int(rng.integers(0, days)), rng.gamma(2.0, 1.5), rng.beta(1, 9)
        for day in range(joined - 20, joined + 2):  # history before, and after, the user joins
            if u % 5 and rng.random() < 0.5:
                impressions = int(rng.poisson(activity)) + 1
                downloads = int(rng.binomial(impressions, p))
                logged.add("older", "x", user, day, impressions, downloads)
                if joined - LOOKBACK <= day < joined:
                    pre = logged.pre.setdefault(user, [0, 0])
                    pre[0], pre[1] = pre[0] + impressions, pre[1] + downloads
        for day in range(joined, FIRST + days):
            if day == joined or rng.random() < 0.6:
                impressions = int(rng.poisson(activity * 2)) + 1
                downloads = int(rng.binomial(impressions, min(1.0, p * (1.3 if arm == "treatment" else 1))))
                logged.add("exp", arm, user, day, impressions, downloads)
                logged.post.setdefault((arm, user), {})[day] = [impressions, downloads]
    return logged


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
