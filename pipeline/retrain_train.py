"""The candidate of a retrain: the serving version's training configuration, warm-started, trained on
the window's training days (torch: imported only by the export and train steps)."""

from __future__ import annotations

from pathlib import Path

from model.bundle import Bundle
from model.encoder import FeatureEncoder
from pipeline.retrain import RetrainJob
from pipeline.retrain_warm import growth, train_config_of, write_grown_bundle, write_warm_bundle
from training.config import TrainConfig, parse_override, with_values
from training.datasets import resolve_dataset
from training.pipeline import train_bundle
from training.prepared.format import ENCODER


def candidate_config(job: RetrainJob, serving: Bundle, version: str) -> TrainConfig:
    """The serving version's configuration, the config file's ``train`` changes, then ``--set``s."""
    changes = dict(job.config.train) | {"version": version, "name": job.model}
    config = train_config_of(serving.manifest.hyperparameters, changes)
    config = with_values(config, dict(parse_override(item) for item in job.overrides))
    return train_config_of(serving.manifest.hyperparameters, config.model_dump(mode="python"))


def train_candidate(
    job: RetrainJob, serving: Bundle, train_file: Path, version: str
) -> dict[str, tuple[int, int]]:
    """The raw-Parquet path (``export: parquet``): write the candidate bundle in the work directory from
    the exported file; returns the vocabulary growth per field."""
    config = candidate_config(job, serving, version)
    warm = job.work / "warm"
    reader = resolve_dataset(train_file, serving.schema, seed=config.seed).train
    grown = write_warm_bundle(serving, reader.chunks(config.chunk_rows), config, warm)
    train_bundle(train_file, job.work / "candidate", config, schema=serving.schema, resume=warm)
    return growth(serving.encoder, grown)


def train_prepared(
    job: RetrainJob, serving: Bundle, prepared: Path, version: str
) -> dict[str, tuple[int, int]]:
    """The candidate trained streamed from the prepared export (encoded with the grown encoder), warm
    from the serving version; returns the vocabulary growth per field."""
    config = candidate_config(job, serving, version)
    grown = FeatureEncoder.load(serving.schema, prepared / ENCODER)
    warm = job.work / "warm"
    write_grown_bundle(serving, grown, config, warm)
    train_bundle(prepared, job.work / "candidate", config, schema=serving.schema, resume=warm)
    return growth(serving.encoder, grown)
