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


class ArmReport(BaseModel):
    """One arm over the whole window.

    Attributes:
        weight: the configured share (percent); None for an arm seen in the log but not configured.
        users: users with at least one event in the window.
        ctr: downloads / impressions; ``ctr_se`` its delta-method standard error over users.
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


class Lift(BaseModel):
    """Relative lift of an arm over the control on one metric: arm / control - 1.

    ``significant`` is true when the two-sided p-value is below 0.05.
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
    """One UTC day: per-arm figures and the CTR and CVR lifts over the control on that day."""

    model_config = ConfigDict(frozen=True)

    day: date
    arms: list[DayArm]
    lifts: list[Lift]


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
