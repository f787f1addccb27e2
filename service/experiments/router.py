"""The A/B router: a sticky bucket per user, bucket ranges per arm, minimal moves when ramping.

Recipe (see ROUTER.md): ``bucket = sha256(salt + ":" + user_id)`` read as a big-endian 64-bit integer,
modulo 10,000. Each arm owns a set of bucket ranges. Coverage uses an independent hash
(``salt + ":coverage:" + user_id``), so widening coverage only adds users and never reshuffles arms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.experiments.models import BUCKETS, Experiment, Objective, Ranges, basis_points

NO_EXPERIMENT = "none"
DEFAULT_ARM = "default"


def _hash_bucket(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % BUCKETS


def bucket_of(salt: str, user_id: str) -> int:
    """The user's bucket in ``[0, 10000)``: the same in every process, machine and language."""
    return _hash_bucket(f"{salt}:{user_id}")


def coverage_bucket_of(salt: str, user_id: str) -> int:
    """The independent bucket that decides whether the user is inside the experiment's coverage."""
    return _hash_bucket(f"{salt}:coverage:{user_id}")


def allocate(targets: Mapping[str, int], previous: Mapping[str, Ranges] | None = None) -> dict[str, Ranges]:
    """Bucket ranges per arm, moving as few buckets as possible away from ``previous``.

    Arms keep the buckets they had; an arm that shrinks gives up its highest buckets; buckets of removed
    arms and given-up buckets go, lowest first, to the arms that grow (in ``targets`` order). So a ramp
    moves exactly ``sum(max(0, old - new))`` buckets, all of them to arms that grow.

    Args:
        targets: buckets wanted per arm (summing to 10,000), in arm order.
        previous: the current allocation, or None for a fresh, contiguous one.
    """
    if sum(targets.values()) != BUCKETS:
        raise ValueError(f"targets must sum to {BUCKETS}")
    arms = list(targets)
    owner = np.full(BUCKETS, -1, dtype=np.int32)
    for index, arm in enumerate(arms):
        for start, end in (previous or {}).get(arm, []):
            owner[start:end] = index
    for index, arm in enumerate(arms):
        mine = np.flatnonzero(owner == index)
        excess = mine.size - targets[arm]
        if excess > 0:
            owner[mine[mine.size - excess :]] = -1
    free = np.flatnonzero(owner == -1)
    taken = 0
    for index, arm in enumerate(arms):
        need = targets[arm] - int(np.count_nonzero(owner == index))
        if need > 0:
            owner[free[taken : taken + need]] = index
            taken += need
    return _ranges(owner, arms)


def _ranges(owner: npt.NDArray[np.int32], arms: Sequence[str]) -> dict[str, Ranges]:
    cuts = np.flatnonzero(np.diff(owner)) + 1
    starts = np.concatenate([[0], cuts]).tolist()
    ends = np.concatenate([cuts, [BUCKETS]]).tolist()
    out: dict[str, Ranges] = {arm: [] for arm in arms}
    for start, end in zip(starts, ends, strict=True):
        out[arms[int(owner[start])]].append((int(start), int(end)))
    return out


def targets_of(experiment_arms: Iterable[tuple[str, float]]) -> dict[str, int]:
    """Buckets per arm from (name, weight percent) pairs."""
    return {name: basis_points(weight) for name, weight in experiment_arms}


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where a request goes: experiment, arm, the arm's model, the objective and the user's bucket.

    ``bucket`` is -1 for users outside the coverage, or when the experiment is stopped or absent: their
    lists are served by the default arm and are not part of the comparison.
    """

    experiment: str
    arm: str
    model: str
    objective: Objective
    bucket: int


class CompiledExperiment:
    """An experiment ready for lookups: a 10,000-entry bucket -> arm table."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self._arms = [arm.name for arm in experiment.arms]
        self._models = {arm.name: arm.model for arm in experiment.arms}
        table = np.full(BUCKETS, -1, dtype=np.int16)
        for index, name in enumerate(self._arms):
            for start, end in experiment.allocation.get(name, []):
                table[start:end] = index
        if (table < 0).any():
            raise ValueError(f"experiment {experiment.name!r}: allocation does not cover every bucket")
        self._table = table.tolist()
        self._coverage = basis_points(experiment.coverage)

    def assign(self, user_id: str) -> Assignment:
        """The user's arm (sticky: a pure function of salt, user_id and the allocation)."""
        e = self.experiment
        if e.running and (self._coverage >= BUCKETS or coverage_bucket_of(e.salt, user_id) < self._coverage):
            bucket = bucket_of(e.salt, user_id)
            arm = self._arms[self._table[bucket]]
            return Assignment(e.name, arm, self._models[arm], e.objective, bucket)
        return Assignment(e.name, e.default_arm, self._models[e.default_arm], e.objective, -1)


class UnknownExperimentError(LookupError):
    """A request named an experiment that does not exist."""


class Router:
    """Maps (experiment name, user_id) to an ``Assignment``; its table is swapped atomically."""

    def __init__(self, default_experiment: str) -> None:
        self.default_experiment = default_experiment
        self._compiled: dict[str, CompiledExperiment] = {}

    def replace(self, experiments: Iterable[Experiment]) -> None:
        """Install a new set of experiments (one reference assignment: requests see old or new)."""
        self._compiled = {e.name: CompiledExperiment(e) for e in experiments}

    @property
    def experiments(self) -> dict[str, Experiment]:
        return {name: compiled.experiment for name, compiled in self._compiled.items()}

    def assign(self, experiment: str | None, user_id: str, default_model: str) -> Assignment:
        """Route a request; without an experiment (and no default one stored) serve ``default_model``.

        Raises:
            UnknownExperimentError: ``experiment`` was given and does not exist.
        """
        compiled = self._compiled
        if experiment is not None:
            found = compiled.get(experiment)
            if found is None:
                raise UnknownExperimentError(experiment)
            return found.assign(user_id)
        default = compiled.get(self.default_experiment)
        if default is not None:
            return default.assign(user_id)
        return Assignment(NO_EXPERIMENT, DEFAULT_ARM, default_model, Objective.CTR, -1)
