"""The candidate of a retrain: the serving version's training configuration, warm-started, trained on
the window's training days (torch: imported only by the train step)."""

from __future__ import annotations

from pathlib import Path

from model.bundle import Bundle
from pipeline.retrain import RetrainJob
from pipeline.retrain_warm import growth, train_config_of, write_warm_bundle
from training.config import TrainConfig, parse_override, with_values
from training.datasets import resolve_dataset
from training.pipeline import train_bundle


def candidate_config(job: RetrainJob, serving: Bundle, version: str) -> TrainConfig:
    """The serving version's configuration, the config file's ``train`` changes, then ``--set``s."""
    changes = dict(job.config.train) | {"version": version, "name": job.model}
    config = train_config_of(serving.manifest.hyperparameters, changes)
    config = with_values(config, dict(parse_override(item) for item in job.overrides))
    return train_config_of(serving.manifest.hyperparameters, config.model_dump(mode="python"))


def train_candidate(
    job: RetrainJob, serving: Bundle, train_file: Path, version: str
) -> dict[str, tuple[int, int]]:
    """Write the candidate bundle in the work directory; returns the vocabulary growth per field."""
    config = candidate_config(job, serving, version)
    warm = job.work / "warm"
    reader = resolve_dataset(train_file, serving.schema, seed=config.seed).train
    grown = write_warm_bundle(serving, reader.chunks(config.chunk_rows), config, warm)
    train_bundle(train_file, job.work / "candidate", config, schema=serving.schema, resume=warm)
    return growth(serving.encoder, grown)
