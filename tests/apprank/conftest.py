"""Fixtures of the orchestration tests: a tiny bootstrapped store (data, LR and DeepFM-D bundles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apprank.bootstrap import BootstrapConfig, BootstrapResult, bootstrap

TINY_TRAINING: dict[str, tuple[str, ...]] = {
    "lr": ("epochs=1", "batch_size=512", "threads=1"),
    "deepfm": ("epochs=1", "batch_size=512", "hidden_units=[16]", "embedding_dim=4", "threads=1"),
}


def tiny_config(root: Path) -> BootstrapConfig:
    """A store of 300 users and 120 apps, 4,000 impressions, models trained for 1 epoch."""
    return BootstrapConfig(
        models_dir=root / "models",
        data_dir=root / "data",
        experiments_file=root / "experiments.json",
        rows=4000,
        num_users=300,
        num_apps=120,
        train_sets=dict(TINY_TRAINING),
    )


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> BootstrapResult:
    """The tiny store, bootstrapped once per session."""
    return bootstrap(tiny_config(tmp_path_factory.mktemp("store")))
