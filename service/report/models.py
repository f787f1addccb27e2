"""The experiment report as pydantic models (the JSON of GET /experiments/{name}/report)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Metric = Literal["ctr", "cvr"]


class Interval(BaseModel):
    """A 95 % confidence interval; both ends None where it is undefined (no data, one user)."""

    model_config = ConfigDict(frozen=True)

    low: float | None
    high: float | None


NO_INTERVAL = Interval(low=None, high=None)


class ArmReport(BaseModel):
    """One arm over the whole window.

    Attributes:
        weight: the configured share (percent); None for an arm seen in the log but not configured.
        users: users with at least one event in the window; ``users_with_history`` those of them with
            events in their CUPED pre-period.
        ctr: downloads / impressions; ``ctr_se`` its delta-method standard error over users,
            ``ctr_ci`` the fixed-horizon 95 % interval, ``ctr_sequential_ci`` the always-valid one.
        cvr: downloads / users; ``cvr_se`` the standard error of that per-user mean.
    """

    model_config = ConfigDict(frozen=True)

    arm: str
    control: bool
    weight: float | None
    users: int
    impressions: int
    downloads: int
    ctr: float | None
    ctr_se: float | None
    ctr_ci: Interval
    cvr: float | None
    cvr_se: float | None
    cvr_ci: Interval
    ctr_sequential_ci: Interval = NO_INTERVAL
    cvr_sequential_ci: Interval = NO_INTERVAL
    users_with_history: int = 0


class CupedLift(BaseModel):
    """The same lift with CUPED: both arms adjusted by the pooled theta, relative to the raw control.

    ``variance_reduction`` is 1 - (se / unadjusted se)^2: the share of the lift's variance removed.
    """

    model_config = ConfigDict(frozen=True)

    lift: float | None
    se: float | None
    ci: Interval
    p_value: float | None
    sequential_ci: Interval
    sequential_p_value: float | None
    variance_reduction: float | None


class Lift(BaseModel):
    """Relative lift of an arm over the control on one metric: arm / control - 1.

    Attributes:
        ci, p_value: the fixed-horizon 95 % interval and two-sided p-value (valid for one look at a
            planned end); ``significant`` when that p-value is below 0.05.
        sequential_ci, sequential_p_value: always-valid (confidence sequence): valid whenever looked at.
        cuped: the CUPED-adjusted lift (None when CUPED does not apply to this metric).
        decision_p_value: the always-valid p-value that decides (CUPED's where it applies), Holm-adjusted
            over every (arm, metric) comparison of the report; ``conclusive`` when below alpha.
        p_value_adjusted: the fixed-horizon p-value, Holm-adjusted the same way.
    """

    model_config = ConfigDict(frozen=True)

    arm: str
    metric: Metric
    control_value: float | None
    arm_value: float | None
    lift: float | None
    se: float | None
    ci: Interval
    p_value: float | None
    significant: bool
    sequential_ci: Interval = NO_INTERVAL
    sequential_p_value: float | None = None
    cuped: CupedLift | None = None
    p_value_adjusted: float | None = None
    decision_p_value: float | None = None
    conclusive: bool = False


class SrmCheck(BaseModel):
    """Sample-ratio mismatch: users per arm against the configured weights.

    ``flagged`` when the chi-square p-value is below ``threshold`` (0.001), or when users were logged
    in arms that should get none (unconfigured or zero weight; see ``note``).
    """

    model_config = ConfigDict(frozen=True)

    observed_users: dict[str, int]
    expected_users: dict[str, float]
    chi2: float | None
    df: int | None
    p_value: float | None
    threshold: float
    flagged: bool
    note: str | None = None


class DayArm(BaseModel):
    """One arm on one UTC day (users active that day)."""

    model_config = ConfigDict(frozen=True)

    arm: str
    users: int
    impressions: int
    downloads: int
    ctr: float | None
    cvr: float | None


class DayReport(BaseModel):
    """One UTC day.

    ``arms`` and ``lifts`` are that day's own figures (users active that day, fixed-horizon intervals);
    ``cumulative`` are the lifts over every user from the window's start to the end of that day, with
    the always-valid intervals and the decision as they stood that day.
    """

    model_config = ConfigDict(frozen=True)

    day: date
    arms: list[DayArm]
    lifts: list[Lift]
    cumulative: list[Lift] = []


class CupedMetric(BaseModel):
    """CUPED for one metric: the pooled theta and the variance it removes from the per-user metric."""

    model_config = ConfigDict(frozen=True)

    metric: Metric
    applied: bool
    theta: float
    variance_reduction: float


class Analysis(BaseModel):
    """How the report was computed.

    Attributes:
        alpha: level of every interval and of the decision.
        sequential_tuning_users: users at which the confidence sequence is tightest.
        correction: the multiple-comparison correction over (arm, metric) comparisons.
        cuped_lookback_days: the pre-period of each user: this many days before their first day in the
            experiment (0: CUPED off). Users without events there have a covariate of 0.
    """

    model_config = ConfigDict(frozen=True)

    alpha: float
    sequential_tuning_users: float
    correction: Literal["holm"] = "holm"
    cuped_lookback_days: int
    cuped: list[CupedMetric]


class ExperimentReport(BaseModel):
    """Per-arm CTR and CVR with intervals, lifts over the control, SRM check and the daily breakdown.

    ``start`` and ``end`` are inclusive UTC days (None: unbounded).
    """

    model_config = ConfigDict(frozen=True)

    experiment: str
    control: str
    start: date | None
    end: date | None
    generated_at: datetime
    confidence: float
    arms: list[ArmReport]
    lifts: list[Lift]
    srm: SrmCheck
    daily: list[DayReport]
    analysis: Analysis | None = None
