"""Experiment definitions: what an admin PUTs, what the store keeps, and the validation rules.

Weights are percents with at most two decimals, so they map exactly onto the router's 10,000 buckets
(one bucket = 0.01 %). ``allocation`` (bucket ranges per arm) is computed by the server, never sent.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUCKETS = 10_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_PATTERN = _NAME.pattern

Ranges = list[tuple[int, int]]


class Objective(StrEnum):
    """What /rank sorts by: the predicted CTR, or CTR times the candidate's bid."""

    CTR = "ctr"
    CTR_BID = "ctr_bid"


def check_name(value: str, what: str) -> str:
    """Names of experiments and arms: 1-64 characters, letters, digits, ``_ . -``."""
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def valid_name(value: str) -> bool:
    """Whether ``value`` can name an experiment (a name that cannot is never stored: 404, not a query)."""
    return _NAME.match(value) is not None


def basis_points(percent: float) -> int:
    """A percent as buckets of 0.01 %; ValueError when it has more than two decimals."""
    scaled = round(percent * 100)
    if abs(percent * 100 - scaled) > 1e-6:
        raise ValueError(f"{percent} has more than two decimals (the split's unit is 0.01 %)")
    return scaled


class ArmSpec(BaseModel):
    """One arm: a name, the model it serves and its share of the covered traffic (percent)."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: str
    model: str
    weight: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "arm name")

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        basis_points(value)
        return value


class ExperimentSpec(BaseModel):
    """The body of ``PUT /experiments/{name}``.

    Attributes:
        salt: the hashing salt; defaults to the experiment's name at creation, kept when omitted later,
            and may change only while the stored experiment is not running.
        arms: the arms, weights summing to 100.
        control: the control arm's name.
        objective: default objective of requests routed by this experiment.
        coverage: percent of users in the experiment; the others get ``default_arm``.
        default_arm: arm served outside the coverage or while stopped (default: the control).
        running: a stopped experiment serves ``default_arm`` to everyone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    salt: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    arms: Annotated[list[ArmSpec], Field(min_length=1, max_length=32)]
    control: str
    objective: Objective = Objective.CTR
    coverage: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] = 100.0
    default_arm: str | None = None
    running: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arms: duplicate arm names {duplicates}")
        total = sum(basis_points(arm.weight) for arm in self.arms)
        if total != BUCKETS:
            raise ValueError(f"arms: weights must sum to 100, they sum to {total / 100:g}")
        if self.control not in names:
            raise ValueError(f"control: {self.control!r} is not one of the arms {names}")
        if self.default_arm is not None and self.default_arm not in names:
            raise ValueError(f"default_arm: {self.default_arm!r} is not one of the arms {names}")
        basis_points(self.coverage)
        return self

    def arm(self, name: str) -> ArmSpec:
        """The arm called ``name`` (KeyError when absent)."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


class Experiment(ExperimentSpec):
    """A stored experiment: the spec plus its name, salt, bucket allocation and bookkeeping."""

    name: str
    salt: str
    default_arm: str
    allocation: dict[str, Ranges]
    version: int
    created_at: datetime
    updated_at: datetime


class AuditEntry(BaseModel):
    """One change of an experiment: who (token name), when, what, and the config before and after."""

    model_config = ConfigDict(frozen=True)

    id: int
    experiment: str
    action: str
    actor: str
    at: datetime
    before: Experiment | None
    after: Experiment | None
