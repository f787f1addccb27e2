"""Building the ``ExperimentReport`` from the store's per-(arm, day) sums (O(arms x days) arithmetic here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from service.report.compare import METRICS, compare_arms, thetas
from service.report.models import (
    Analysis,
    ArmReport,
    CupedMetric,
    DayArm,
    DayReport,
    ExperimentReport,
    Interval,
    Lift,
    Metric,
    SrmCheck,
)
from service.report.sequential import SequentialDesign
from service.report.stats import Estimate, UserSums, mean_estimate, ratio_estimate, relative_lift, srm_test
from service.report.sums import ArmDay, ArmHistory, Moments, ReportStore, accumulate, read_arm_days

SRM_THRESHOLD = 0.001
SIGNIFICANCE = 0.05
EPOCH = date(1970, 1, 1)
LAST_DAY = 2_932_896  # 9999-12-31
CUPED_LOOKBACK_DAYS = 14  # GrowthBook's default pre-period
# (store, experiment, first day, last day, CUPED lookback days) -> the (arm, day) rows
ArmDayReader = Callable[[ReportStore, str, int, int, int], list[ArmDay]]


@dataclass(frozen=True)
class ExperimentArms:
    """What the report needs of an experiment: its arms' weights (percent, display order) and control."""

    name: str
    weights: Mapping[str, float]
    control: str

    def __post_init__(self) -> None:
        if self.control not in self.weights:
            raise ValueError(f"control {self.control!r} is not one of the arms {list(self.weights)}")


@dataclass(frozen=True)
class AnalysisOptions:
    """The always-valid design (level, tuning) and the CUPED pre-period (0 days: CUPED off)."""

    design: SequentialDesign = field(default_factory=SequentialDesign)
    cuped_lookback_days: int = CUPED_LOOKBACK_DAYS

    def __post_init__(self) -> None:
        if self.cuped_lookback_days < 0:
            raise ValueError(f"cuped_lookback_days must be >= 0, got {self.cuped_lookback_days}")


def day_number(day: date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def build_report(
    source: ReportStore,
    experiment: ExperimentArms,
    start: date | None = None,
    end: date | None = None,
    now: datetime | None = None,
    options: AnalysisOptions | None = None,
    read: ArmDayReader = read_arm_days,
) -> ExperimentReport:
    """The report of ``experiment`` over the UTC days ``start`` to ``end`` (inclusive, None = open).

    ``read`` gives the per (arm, day) rows; another reader than the store's is for benchmarks.
    """
    if start is not None and end is not None and start > end:
        raise ValueError(f"start {start} is after end {end}")
    options = options or AnalysisOptions()
    first = 0 if start is None else day_number(start)
    last = LAST_DAY if end is None else day_number(end)
    rows = read(source, experiment.name, first, last, options.cuped_lookback_days)
    histories = accumulate(rows)
    overall = {arm: history.moments[-1] for arm, history in histories.items()}
    arms = list(experiment.weights) + sorted(set(overall) - set(experiment.weights))
    pooled = thetas(overall, options.cuped_lookback_days > 0)
    design = options.design
    return ExperimentReport(
        experiment=experiment.name,
        control=experiment.control,
        start=start,
        end=end,
        generated_at=now or datetime.now(UTC),
        confidence=0.95,
        arms=[_arm_report(arm, experiment, overall.get(arm), design) for arm in arms],
        lifts=compare_arms(overall, arms, experiment.control, design, pooled),
        srm=srm_check({arm: moments.n for arm, moments in overall.items()}, experiment.weights),
        daily=_daily(rows, histories, experiment, arms, options),
        analysis=Analysis(
            alpha=design.alpha,
            sequential_tuning_users=design.tuning_users,
            cuped_lookback_days=options.cuped_lookback_days,
            cuped=[
                CupedMetric(
                    metric=metric,
                    applied=pooled[metric].applied,
                    theta=pooled[metric].theta,
                    variance_reduction=pooled[metric].variance_reduction,
                )
                for metric in METRICS
            ],
        ),
    )


def _estimates(sums: UserSums | None) -> dict[Metric, Estimate]:
    sums = sums or UserSums(0, 0, 0, 0, 0, 0)
    return {"ctr": ratio_estimate(sums), "cvr": mean_estimate(sums)}


def _interval(bounds: tuple[float | None, float | None]) -> Interval:
    return Interval(low=bounds[0], high=bounds[1])


def _arm_report(
    arm: str, experiment: ExperimentArms, moments: Moments | None, design: SequentialDesign
) -> ArmReport:
    moments = moments or Moments.zero()
    sums = moments.user_sums()
    estimates = _estimates(sums)
    ctr, cvr = estimates["ctr"], estimates["cvr"]
    return ArmReport(
        arm=arm,
        control=arm == experiment.control,
        weight=experiment.weights.get(arm),
        users=sums.n,
        impressions=int(sums.s_i),
        downloads=int(sums.s_d),
        ctr=ctr.value,
        ctr_se=ctr.se,
        ctr_ci=_interval(ctr.interval()),
        cvr=cvr.value,
        cvr_se=cvr.se,
        cvr_ci=_interval(cvr.interval()),
        ctr_sequential_ci=_interval(design.interval(ctr, sums.n)),
        cvr_sequential_ci=_interval(design.interval(cvr, sums.n)),
        users_with_history=moments.with_history,
    )


def _day_lifts(
    arms: Sequence[str], control: str, estimates: Mapping[str, Mapping[Metric, Estimate]]
) -> list[Lift]:
    """That day's own CTR and CVR lift of every non-control arm (fixed-horizon only)."""
    lifts: list[Lift] = []
    for arm in arms:
        if arm == control:
            continue
        for metric in METRICS:
            treated, baseline = estimates[arm][metric], estimates[control][metric]
            lift = relative_lift(treated, baseline)
            lifts.append(
                Lift(
                    arm=arm,
                    metric=metric,
                    control_value=baseline.value,
                    arm_value=treated.value,
                    lift=lift.lift,
                    se=lift.se,
                    ci=_interval(lift.interval()),
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


def _daily(
    rows: Sequence[ArmDay],
    histories: Mapping[str, ArmHistory],
    experiment: ExperimentArms,
    arms: Sequence[str],
    options: AnalysisOptions,
) -> list[DayReport]:
    """Per UTC day: that day's own figures, and the cumulative lifts as they stood at its end."""
    by_day: dict[int, dict[str, UserSums]] = {}
    for row in rows:
        own = row.own
        by_day.setdefault(row.day, {})[row.arm] = UserSums(
            own.users, own.impressions, own.downloads, own.sum_ii, own.sum_dd, own.sum_id
        )
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
        as_of = {arm: history.as_of(day) for arm, history in histories.items()}
        pooled = thetas(as_of, options.cuped_lookback_days > 0)
        reports.append(
            DayReport(
                day=EPOCH + timedelta(days=day),
                arms=day_arms,
                lifts=_day_lifts(present, experiment.control, estimates),
                cumulative=compare_arms(as_of, arms, experiment.control, options.design, pooled),
            )
        )
    return reports
