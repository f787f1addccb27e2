"""``apprank run``'s bootstrap: data, LR and DeepFM-D bundles and the experiment, made once, then reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apprank.bootstrap import EXPERIMENT, BootstrapResult, bootstrap, bundle_names
from apprank.cli import build_app
from apprank.run import service_environment
from service.experiments.models import ExperimentSpec
from tests.conftest import tiny_config


def _mtimes(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_fresh_bootstrap_makes_data_bundles_and_a_fifty_fifty_experiment(
    tiny_store: BootstrapResult,
) -> None:
    config = tiny_store.config
    assert tiny_store.data_created and tiny_store.trained == ["lr", "deepfm"] and tiny_store.reused == []
    assert {p.name for p in config.data_dir.iterdir()} >= {"train.csv", "valid.csv", "test.csv", "synth.json"}
    assert json.loads((config.data_dir / "synth.json").read_text())["num_users"] == 300
    assert bundle_names(config.models_dir) == ["deepfm", "lr"]
    assert set(tiny_store.test_auc) == {"lr", "deepfm"}
    [entry] = json.loads(config.experiments_file.read_text())
    assert entry.pop("name") == EXPERIMENT == tiny_store.experiment
    spec = ExperimentSpec.model_validate(entry)  # the service's own validation of the seeded experiment
    assert {(arm.name, arm.model, arm.weight) for arm in spec.arms} == {
        ("lr", "lr", 50),
        ("deepfm", "deepfm", 50),
    }
    assert spec.control == "lr"


def test_a_second_bootstrap_reuses_everything(tiny_store: BootstrapResult) -> None:
    root = tiny_store.config.models_dir.parent
    before = _mtimes(root)
    again = bootstrap(tiny_store.config)
    assert not again.data_created and again.trained == [] and again.reused == ["deepfm", "lr"]
    assert again.experiment == EXPERIMENT
    assert _mtimes(root) == before  # nothing rewritten


def test_a_missing_bundle_is_trained_alone(tiny_store: BootstrapResult, tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    shutil.copytree(tiny_store.config.models_dir / "lr", config.models_dir / "lr")
    shutil.copytree(tiny_store.config.data_dir, config.data_dir)
    result = bootstrap(config)
    assert result.trained == ["deepfm"] and result.reused == ["lr"] and not result.data_created
    assert bundle_names(config.models_dir) == ["deepfm", "lr"]


def test_the_dataset_is_written_again_when_only_the_bundles_are_left(
    tiny_store: BootstrapResult, tmp_path: Path
) -> None:
    config = tiny_config(tmp_path)
    shutil.copytree(tiny_store.config.models_dir, config.models_dir)
    result = bootstrap(config)
    assert result.data_created and result.trained == [] and result.reused == ["deepfm", "lr"]
    same_world = (tiny_store.config.data_dir / "synth.json").read_text()
    assert (config.data_dir / "synth.json").read_text() == same_world  # the world the bundles learned


def test_the_users_own_bundles_are_served_as_they_are(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    (config.models_dir / "mine").mkdir(parents=True)
    (config.models_dir / "mine" / "manifest.json").write_text("{}")
    result = bootstrap(config)
    assert result.experiment is None and result.trained == [] and result.reused == ["mine"]
    assert not config.data_dir.exists() and not config.experiments_file.exists()


def test_service_environment_keeps_what_the_user_set(
    tiny_store: BootstrapResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("APPRANK_DEFAULT_EXPERIMENT", raising=False)
    monkeypatch.delenv("APPRANK_EXPERIMENTS_FILE", raising=False)
    monkeypatch.setenv("APPRANK_DATABASE_URL", f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    environment = service_environment(tiny_store, "secret")
    assert environment["APPRANK_ADMIN_TOKEN"] == "secret"
    assert environment["APPRANK_DATABASE_URL"] == f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    assert environment["APPRANK_EXPERIMENTS_FILE"] == str(tiny_store.config.experiments_file)
    assert environment["APPRANK_DEFAULT_EXPERIMENT"] == EXPERIMENT
    assert (tmp_path / "sub").is_dir()  # the SQLite file's folder is made


def test_run_without_serving_prints_what_is_where(
    tiny_store: BootstrapResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("APPRANK_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("APPRANK_DATABASE_URL", f"sqlite:///{tmp_path / 'run.db'}")
    monkeypatch.setenv("COLUMNS", "200")
    config = tiny_store.config
    arguments = ["run", "--no-serve", "--models", str(config.models_dir), "--data", str(config.data_dir)]
    arguments += ["--experiments-file", str(config.experiments_file), "--port", "8123"]
    outcome = CliRunner().invoke(build_app(), arguments)
    assert outcome.exit_code == 0, outcome.output
    for expected in ("http://127.0.0.1:8123", "deepfm-vs-lr", "reused", "admin token", "generated now"):
        assert expected in outcome.output
