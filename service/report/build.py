"""Building the ``ExperimentReport`` from the store's per-arm sums (O(arms x days) arithmetic here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from service.events.models import ArmDaySums
from service.report.models import (
    ArmReport,
    DayArm,
    DayReport,
    ExperimentReport,
    Interval,
    Lift,
    Metric,
    SrmCheck,
)
from service.report.stats import Estimate, UserSums, mean_estimate, ratio_estimate, relative_lift, srm_test

SRM_THRESHOLD = 0.001
SIGNIFICANCE = 0.05
EPOCH = date(1970, 1, 1)
LAST_DAY = 2_932_896  # 9999-12-31


@dataclass(frozen=True)
class ExperimentArms:
    """What the report needs of an experiment: its arms' weights (percent, display order) and control."""

    name: str
    weights: Mapping[str, float]
    control: str

    def __post_init__(self) -> None:
        if self.control not in self.weights:
            raise ValueError(f"control {self.control!r} is not one of the arms {list(self.weights)}")


class ArmSumsSource(Protocol):
    """Where per-arm user sums come from (the event store)."""

    def arm_sums(self, experiment: str, first_day: int, last_day: int) -> list[ArmDaySums]: ...


def day_number(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def build_report(
    source: ArmSumsSource,
    experiment: ExperimentArms,
    start: date | None = None,
    end: date | None = None,
    now: datetime | None = None,
) -> ExperimentReport:
    """The report of ``experiment`` over the UTC days ``start`` to ``end`` (inclusive, None = open)."""
    if start is not None and end is not None and start > end:
        raise ValueError(f"start {start} is after end {end}")
    first = 0 if start is None else day_number(start)
    last = LAST_DAY if end is None else day_number(end)
    rows = source.arm_sums(experiment.name, first, last)
    overall = {row.arm: _sums(row) for row in rows if row.day is None}
    arms = list(experiment.weights) + sorted(set(overall) - set(experiment.weights))
    estimates = {arm: _estimates(overall.get(arm)) for arm in arms}
    return ExperimentReport(
        experiment=experiment.name,
        control=experiment.control,
        start=start,
        end=end,
        generated_at=now or datetime.now(UTC),
        confidence=0.95,
        arms=[_arm_report(arm, experiment, overall.get(arm), estimates[arm]) for arm in arms],
        lifts=_lifts(arms, experiment.control, estimates),
        srm=srm_check({arm: sums.n for arm, sums in overall.items()}, experiment.weights),
        daily=_daily(rows, experiment, arms),
    )


def _sums(row: ArmDaySums) -> UserSums:
    return UserSums(row.users, row.impressions, row.downloads, row.sum_ii, row.sum_dd, row.sum_id)


def _estimates(sums: UserSums | None) -> dict[Metric, Estimate]:
    sums = sums or UserSums(0, 0, 0, 0, 0, 0)
    return {"ctr": ratio_estimate(sums), "cvr": mean_estimate(sums)}


def _interval(estimate: Estimate) -> Interval:
    low, high = estimate.interval()
    return Interval(low=low, high=high)


def _arm_report(
    arm: str, experiment: ExperimentArms, sums: UserSums | None, estimates: Mapping[Metric, Estimate]
) -> ArmReport:
    ctr, cvr = estimates["ctr"], estimates["cvr"]
    return ArmReport(
        arm=arm,
        control=arm == experiment.control,
        weight=experiment.weights.get(arm),
        users=0 if sums is None else sums.n,
        impressions=0 if sums is None else int(sums.s_i),
        downloads=0 if sums is None else int(sums.s_d),
        ctr=ctr.value,
        ctr_se=ctr.se,
        ctr_ci=_interval(ctr),
        cvr=cvr.value,
        cvr_se=cvr.se,
        cvr_ci=_interval(cvr),
    )


def _lifts(
    arms: Sequence[str], control: str, estimates: Mapping[str, Mapping[Metric, Estimate]]
) -> list[Lift]:
    """The CTR and CVR lift of every non-control arm over the control."""
    lifts: list[Lift] = []
    for arm in arms:
        if arm == control:
            continue
        for metric in ("ctr", "cvr"):
            treated, baseline = estimates[arm][metric], estimates[control][metric]
            lift = relative_lift(treated, baseline)
            low, high = lift.interval()
            lifts.append(
                Lift(
                    arm=arm,
                    metric=metric,
                    control_value=baseline.value,
                    arm_value=treated.value,
                    lift=lift.lift,
                    se=lift.se,
                    ci=Interval(low=low, high=high),
                    p_value=lift.p_value,
                    significant=lift.p_value is not None and lift.p_value < SIGNIFICANCE,
                )
            )
    return lifts


def srm_check(observed: Mapping[str, int], weights: Mapping[str, float]) -> SrmCheck:
    """Chi-square of users per arm against the weights; flagged below p = 0.001 or on stray users."""
    stray = {arm: n for arm, n in observed.items() if weights.get(arm, 0.0) <= 0 and n > 0}
    result = srm_test(observed, weights)
    note = None
    if stray:
        note = f"users logged in arms that should get none (unconfigured or zero weight): {stray}"
    elif result is None:
        note = "not enough data: fewer than two arms of positive weight, or no users"
    return SrmCheck(
        observed_users={
            arm: observed.get(arm, 0) for arm in list(weights) + sorted(set(observed) - set(weights))
        },
        expected_users={} if result is None else result.expected,
        chi2=None if result is None else result.chi2,
        df=None if result is None else result.df,
        p_value=None if result is None else result.p_value,
        threshold=SRM_THRESHOLD,
        flagged=bool(stray) or (result is not None and result.p_value < SRM_THRESHOLD),
        note=note,
    )


def _daily(rows: Sequence[ArmDaySums], experiment: ExperimentArms, arms: Sequence[str]) -> list[DayReport]:
    """Per UTC day: per-arm counts, CTR and CVR, and the lifts over the control (users of that day)."""
    by_day: dict[int, dict[str, UserSums]] = {}
    for row in rows:
        if row.day is not None:
            by_day.setdefault(row.day, {})[row.arm] = _sums(row)
    reports: list[DayReport] = []
    for day in sorted(by_day):
        sums = by_day[day]
        present = [arm for arm in arms if arm in sums or arm == experiment.control]
        estimates = {arm: _estimates(sums.get(arm)) for arm in present}
        day_arms = [
            DayArm(
                arm=arm,
                users=sums[arm].n,
                impressions=int(sums[arm].s_i),
                downloads=int(sums[arm].s_d),
                ctr=estimates[arm]["ctr"].value,
                cvr=estimates[arm]["cvr"].value,
            )
            for arm in present
            if arm in sums
        ]
        lifts = _lifts(present, experiment.control, estimates)
        reports.append(DayReport(day=EPOCH + timedelta(days=day), arms=day_arms, lifts=lifts))
    return reports
