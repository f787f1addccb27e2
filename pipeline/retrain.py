"""``apprank retrain``: export the window, train warm, evaluate both versions, gate, publish, reload.

Every run works in ``models/.retrain/NAME-FIRST-HOLDOUT-LAST/`` (its window's days; hidden: no reload
takes it for a model; on the models volume, so publishing is one rename) and records each finished step
in ``state.json``. A run killed at any point is resumed by running it again: finished steps are
skipped, a half-written export is redone, the candidate bundle appears only complete (``train_bundle``
writes it aside and renames it), and the publish step is recognised as done when the candidate's
version exists already. So a window is published at most once, and the serving version is untouched
until the gate has passed.

Steps: ``export`` (by default the window's training days streamed from the store into a prepared
dataset, ``pipeline.retrain_data``; with ``export: parquet`` the raw rows written by the swappable
``Exporter``, ``pipeline.export.export_training``), ``train`` (warm from the serving version,
``pipeline.retrain_warm``, streamed from the prepared dataset), ``evaluate`` (the same held-out days,
streamed from the store, each version with its own encoder, through ONNX Runtime), ``gate``
(``pipeline.gate``), ``publish`` (``model.versions.publish``, audited, the ``models`` counter bumped
so every worker reloads) and ``reload`` (``POST /models/reload`` on ``--url``). ``retrain.json``
beside the versions tells the service's metrics how the last run ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from model.bundle import BundleError, new_version, read_bundle, read_manifest
from model.schema import FeatureSchema
from model.versions import DEFAULT_KEEP, current_version, has_bundle, list_versions, publish, version_path
from pipeline.export import ExportSummary
from pipeline.gate import GateConfig, GateDecision, decide
from pipeline.retrain_state import RetrainState
from service.events.store import EventStore
from service.rank.retrain_status import Outcome, RetrainStatus, write_status

log = logging.getLogger(__name__)
DAY = timedelta(days=1)
WORK = ".retrain"

# (store, experiment, start_ts, end_ts, out file, schema) -> what was written (the ``parquet`` export).
Exporter = Callable[[EventStore, str, float, float, Path, FeatureSchema], ExportSummary]


class RetrainConfig(BaseModel):
    """The ``--config`` YAML: the window, the versions kept, training changes and the gate's margins.

    Attributes:
        train: ``TrainConfig`` keys laid over the serving version's own (``epochs: 3``); never ``model``
            or ``params`` (a warm start keeps the architecture).
        export: ``prepared`` (the default) streams the window from the store into a prepared dataset
            and trains streamed from it (``pipeline.retrain_data``); ``parquet`` writes the raw rows to
            ``train.parquet`` / ``holdout.parquet`` first and trains from the file (in memory within
            the training ``memory_budget``).
        block_rows: rows read from the event store per block (what the export holds in memory).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: Annotated[int, Field(ge=2)] = 7
    holdout_days: Annotated[int, Field(ge=1)] = 1
    keep: Annotated[int, Field(ge=1)] = DEFAULT_KEEP
    train: dict[str, Any] = {}
    gate: GateConfig = GateConfig()
    export: Literal["prepared", "parquet"] = "prepared"
    block_rows: Annotated[int, Field(ge=100)] = 50_000


def load_retrain_config(path: Path | None, **flags: Any) -> RetrainConfig:
    """The YAML at ``path`` (or the defaults) with the CLI's flags (None: unset) on top."""
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {} if path is not None else {}
    data |= {key: value for key, value in flags.items() if value is not None}
    return RetrainConfig.model_validate(data)


@dataclass(frozen=True)
class Window:
    """The training days and the held-out days, as [start, end) unix times."""

    first_day: date
    holdout_day: date
    last_day: date

    @classmethod
    def ending(cls, last_day: date, days: int, holdout_days: int) -> Window:
        if holdout_days >= days:
            raise ValueError(f"holdout_days ({holdout_days}) must be fewer than days ({days})")
        return cls(last_day - (days - 1) * DAY, last_day - (holdout_days - 1) * DAY, last_day)

    @staticmethod
    def ts(day: date) -> float:
        return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()

    @property
    def train(self) -> tuple[float, float]:
        return self.ts(self.first_day), self.ts(self.holdout_day)

    @property
    def holdout(self) -> tuple[float, float]:
        return self.ts(self.holdout_day), self.ts(self.last_day + DAY)


@dataclass(frozen=True)
class RetrainJob:
    """One retrain: which model, from which experiment's log, over which window."""

    experiment: str
    model: str
    models_dir: Path
    window: Window
    config: RetrainConfig
    overrides: tuple[str, ...] = ()

    @property
    def model_dir(self) -> Path:
        return self.models_dir / self.model

    @property
    def work(self) -> Path:
        window = self.window
        return (
            self.models_dir / WORK / f"{self.model}-{window.first_day}-{window.holdout_day}-{window.last_day}"
        )


class RetrainError(RuntimeError):
    """A step failed; the message says which and why (the serving version is untouched)."""


def start_state(job: RetrainJob) -> RetrainState:
    """The run's state: resumed from ``state.json`` (a failed run retries from the step that failed, a
    finished one is left as it is), or new (the serving version and the candidate's version name are
    fixed here, so a resumed run compares and publishes the same ones)."""
    resumed = RetrainState.load(job.work)
    if resumed is not None and resumed.finished and resumed.outcome is not Outcome.FAILED:
        log.info("the retrain in %s is done already (%s)", job.work, resumed.outcome)
        return resumed
    if resumed is not None:
        log.info("resuming the retrain in %s after step %s", job.work, resumed.last_step)
        resumed.finished = False
        return resumed
    serving = current_version(job.model_dir) if has_bundle(job.model_dir) else None
    state = RetrainState(
        experiment=job.experiment, model=job.model, serving_version=serving, candidate_version=new_version()
    )
    job.work.mkdir(parents=True, exist_ok=True)
    state.save(job.work)
    return state


def serving_path(job: RetrainJob, state: RetrainState) -> Path | None:
    """Where the serving version recorded at the start lies now (a publish may have moved a flat bundle)."""
    if state.serving_version is None:
        return None
    return version_path(job.model_dir, state.serving_version)


def schema_of(job: RetrainJob, state: RetrainState) -> FeatureSchema:
    path = serving_path(job, state)
    if path is None:
        raise RetrainError(f"{job.model_dir}: no serving version to warm-start from (train one first)")
    return read_bundle(path).schema


def published_version(job: RetrainJob, state: RetrainState) -> bool:
    """Whether the candidate's version is among the model's versions already (a publish that finished)."""
    return any(e.version == state.candidate_version for e in list_versions(job.model_dir))


def publish_candidate(job: RetrainJob, state: RetrainState, pinned: Collection[str] = ()) -> Path:
    """Move the candidate in as the new current version, unless an earlier attempt did (the pruning
    after it spares the ``pinned`` versions)."""
    if published_version(job, state):
        return version_path(job.model_dir, state.candidate_version)
    candidate = job.work / "candidate"
    if read_manifest(candidate).version != state.candidate_version:
        raise BundleError(f"{candidate}: not version {state.candidate_version}")
    return publish(job.model_dir, candidate, state.candidate_version, job.config.keep, pinned)


def status_of(state: RetrainState, outcome: Outcome, reasons: list[str]) -> RetrainStatus:
    return RetrainStatus(
        model=state.model,
        outcome=outcome,
        finished_at=datetime.now(UTC),
        serving_version=state.serving_version,
        candidate_version=state.candidate_version,
        reasons=reasons,
    )


def record_outcome(job: RetrainJob, state: RetrainState, outcome: Outcome, reasons: list[str]) -> None:
    """Finish the run: the state, and the status file the service's metrics read."""
    state.outcome = outcome
    state.reasons = reasons
    state.finished = True
    state.save(job.work)
    write_status(job.model_dir, status_of(state, outcome, reasons))


def gate_decision(state: RetrainState, config: GateConfig) -> GateDecision:
    if state.candidate_metrics is None:
        raise RetrainError("the gate needs the candidate's held-out figures")
    return decide(state.candidate_metrics, state.serving_metrics, config)
