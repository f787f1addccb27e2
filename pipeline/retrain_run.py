"""The steps of ``apprank retrain`` run in order, each skipped when a previous attempt finished it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.bundle import MANIFEST, read_bundle, read_manifest
from pipeline.export import export_training
from pipeline.retrain import (
    Exporter,
    RetrainError,
    RetrainJob,
    gate_decision,
    publish_candidate,
    record_outcome,
    schema_of,
    serving_path,
    start_state,
)
from pipeline.retrain_data import Source, evaluate_streamed, training_rows, write_prepared
from pipeline.retrain_state import RetrainState, Step, peak_rss_mib, release_memory, reset_peak_rss
from pipeline.row_spill import Spilled
from service.db import Database
from service.events.store import EventStore
from service.experiments.store import ExperimentStore
from service.rank.model_admin import ModelAdmin
from service.rank.registry import split_ref
from service.rank.retrain_status import Outcome
from training.readers.base import Chunk

log = logging.getLogger(__name__)
RETRAIN_ACTOR = "retrain"
Reloader = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Services:
    """What the steps talk to: the event store, the database of the audit and change counters, the
    exporter, and how to ask the running service to reload (None: the counter alone does it)."""

    store: EventStore
    db: Database | None
    prefix: str
    exporter: Exporter = export_training
    reloader: Reloader | None = None


def _files(job: RetrainJob) -> tuple[Path, Path]:
    data = job.work / "data"
    return data / "train.parquet", data / "holdout.parquet"


def _prepared(job: RetrainJob) -> Path:
    return job.work / "data" / "prepared"


def _source(job: RetrainJob, services: Services, days: tuple[float, float]) -> Source:
    return Source(services.store, job.experiment, days[0], days[1], job.config.block_rows)


def _nothing_to_train(job: RetrainJob) -> RetrainError:
    return RetrainError(
        f"no impressions of experiment {job.experiment!r} from {job.window.first_day} "
        f"to {job.window.holdout_day} (exclusive): nothing to train on"
    )


def export_step(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """The training days as a prepared dataset (``export: parquet``: both parts as raw files)."""
    if job.config.export == "parquet":
        _export_parquet(job, state, services)
    else:
        _export_prepared(job, state, services)


def _export_prepared(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """Pass 1 reads the store, spills the rows and grows the serving encoder on the train split; pass 2
    encodes the spilled rows into the prepared dataset."""
    from pipeline.retrain_train import candidate_config
    from pipeline.retrain_warm import grow_encoder

    path = serving_path(job, state)
    if path is None:
        schema_of(job, state)  # raises: no serving version to warm-start from
    assert path is not None
    serving = read_bundle(path)
    config = candidate_config(job, serving, state.candidate_version)
    source = _source(job, services, job.window.train)
    counted = [0]

    def counting(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        for chunk in chunks:
            counted[0] += chunk.num_rows
            yield chunk

    spilled = Spilled(source, job.work / "data" / "rows.spill")
    try:
        grown = grow_encoder(serving.encoder, counting(training_rows(spilled, serving.schema, config)))
        if counted[0] == 0:
            raise _nothing_to_train(job)
        written = write_prepared(spilled, grown, config, _prepared(job))
    finally:
        spilled.remove()
    state.exported = {"train": {"rows": written.rows, "positives": written.positives}}


def _export_parquet(job: RetrainJob, state: RetrainState, services: Services) -> None:
    schema = schema_of(job, state)
    train_file, holdout_file = _files(job)
    train_file.parent.mkdir(parents=True, exist_ok=True)
    exported = {}
    for part, (start, end), out in (
        ("train", job.window.train, train_file),
        ("holdout", job.window.holdout, holdout_file),
    ):
        summary = services.exporter(services.store, job.experiment, start, end, out, schema)
        exported[part] = {"rows": summary.rows, "positives": summary.positives}
    if exported["train"]["rows"] == 0:
        raise _nothing_to_train(job)
    state.exported = exported


def train_step(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """The candidate, warm-started from the serving version (skipped when a complete one is there)."""
    from pipeline.retrain_train import train_candidate, train_prepared

    candidate = job.work / "candidate"
    if (candidate / MANIFEST).is_file() and read_manifest(candidate).version == state.candidate_version:
        return
    path = serving_path(job, state)
    assert path is not None  # export_step refused a run without one
    serving, version = read_bundle(path), state.candidate_version
    if job.config.export == "parquet":
        state.vocabulary_growth = train_candidate(job, serving, _files(job)[0], version)
    else:
        state.vocabulary_growth = train_prepared(job, serving, _prepared(job), version)


def evaluate_step(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """Candidate and serving version on the same held-out days, through ONNX Runtime (streamed from
    the store in blocks; ``export: parquet``: from the exported file)."""
    if job.config.export == "parquet":
        _evaluate_files(job, state)
        return
    path = serving_path(job, state)
    bundles = [read_bundle(job.work / "candidate")] + ([] if path is None else [read_bundle(path)])
    held_out = evaluate_streamed(bundles, _source(job, services, job.window.holdout))
    state.exported["holdout"] = {"rows": held_out.rows, "positives": held_out.positives}
    state.candidate_metrics = held_out.metrics[0]
    state.serving_metrics = None if path is None else held_out.metrics[1]


def _evaluate_files(job: RetrainJob, state: RetrainState) -> None:
    from training.evaluate import evaluate_bundle

    holdout = _files(job)[1]
    if state.exported["holdout"]["rows"] == 0:
        state.candidate_metrics = {"rows": 0.0}
        return
    state.candidate_metrics = evaluate_bundle(job.work / "candidate", holdout).metrics
    path = serving_path(job, state)
    state.serving_metrics = None if path is None else evaluate_bundle(path, holdout).metrics


def gate_step(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """Decide; a refusal ends the run here (``run_retrain`` stops after this step)."""
    state.decision = gate_decision(state, job.config.gate)
    log.info("gate: %s %s", "passed" if state.decision.passed else "refused", state.decision.reasons)


def pinned_versions(services: Services, model: str) -> set[str]:
    """The versions of ``model`` that stored experiments pin (``model@version`` arms)."""
    if services.db is None:
        return set()
    experiments = ExperimentStore(services.db, services.prefix).experiments()
    refs = (split_ref(arm.model) for experiment in experiments for arm in experiment.arms)
    return {version for name, version in refs if name == model and version is not None}


def publish_step(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """The candidate as the new current version, audited; the change counter tells every worker."""
    publish_candidate(job, state, pinned_versions(services, job.model))
    if services.db is not None:
        admin = ModelAdmin(job.models_dir, services.db, services.prefix)
        admin.publish_recorded(job.model, state.candidate_version, state.serving_version, RETRAIN_ACTOR)


def reload_step(job: RetrainJob, state: RetrainState, services: Services) -> None:
    """``POST /models/reload`` on the service, when one was named (a failure here is reported, not
    fatal: the workers reload on the change counter anyway)."""
    if services.reloader is None:
        state.reload = None
        return
    try:
        state.reload = services.reloader()
    except Exception as error:  # noqa: BLE001 - any transport failure is reported in the summary
        state.reload = {"error": str(error)}


STEPS: tuple[tuple[Step, Callable[[RetrainJob, RetrainState, Services], None]], ...] = (
    (Step.EXPORT, export_step),
    (Step.TRAIN, train_step),
    (Step.EVALUATE, evaluate_step),
    (Step.GATE, gate_step),
    (Step.PUBLISH, publish_step),
    (Step.RELOAD, reload_step),
)


def run_retrain(job: RetrainJob, services: Services) -> RetrainState:
    """Run (or resume) the retrain of ``job``; the finished state is its summary.

    Raises:
        RetrainError: a step failed (recorded as the outcome ``failed``; the serving version untouched
            unless the failure came after the publish).
    """
    state = start_state(job)
    current = Step.EXPORT
    try:
        for current, action in STEPS:
            if current not in state.done:
                started, measured = time.perf_counter(), reset_peak_rss()
                action(job, state, services)
                peak = peak_rss_mib() if measured else None
                release_memory()  # a step's garbage (the export's counts, the trainer) leaves with it
                state.finish_step(current, time.perf_counter() - started, job.work, peak)
            if current is Step.GATE and state.decision is not None and not state.decision.passed:
                break  # refused: the serving version stays
    except Exception as error:
        record_outcome(job, state, Outcome.FAILED, [f"{current.value}: {error}"])
        raise RetrainError(f"retrain of {job.model} failed at {current.value}: {error}") from error
    decision = state.decision
    assert decision is not None
    outcome = Outcome.PUBLISHED if decision.passed else Outcome.REFUSED
    record_outcome(job, state, outcome, decision.reasons)
    return state
