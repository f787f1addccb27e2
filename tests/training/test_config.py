"""Training config: typed YAML, per-model defaults, overrides, and typos that are refused by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from training.config import MODEL_DEFAULTS, ConfigError, load_config


def test_yaml_then_overrides_then_validation(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: deepfm\nepochs: 7\nparams:\n  hidden_units: [64, 32]\n  activation: tanh\n")
    config = load_config(path, ["epochs=3", "dropout=0.5", "optimizer.lr=0.002"])
    assert config.epochs == 3 and config.optimizer.lr == 0.002
    params = config.model_params().model_dump()
    assert params["hidden_units"] == (64, 32) and params["activation"] == "tanh" and params["dropout"] == 0.5


def test_model_defaults_sit_below_file_and_command_line(tmp_path: Path) -> None:
    assert load_config(None, model="lr").optimizer.lr == 0.01
    assert load_config(None, ["model=deepfm"]).embedding_l2 == 0.05
    path = tmp_path / "c.yaml"
    path.write_text("model: lr\noptimizer: {lr: 0.1}\n")
    assert load_config(path).optimizer.lr == 0.1
    assert load_config(path, ["optimizer.lr=0.2"]).optimizer.lr == 0.2


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("epoch: 3\n", [], "epoch: Extra inputs are not permitted"),
        ("", ["optimizer.lrr=1"], "optimizer.lrr: Extra inputs are not permitted"),
        ("", ["hidden_unit=[8]"], "hidden_unit: Extra inputs are not permitted"),
        ("", ["batch_size=0"], "batch_size: Input should be greater than or equal to 1"),
        ("", ["precision=fp16"], "precision: Input should be 'fp32' or 'bf16'"),
        ("model: deepfn\n", [], "model: unknown model 'deepfn'; known: lr, fm, dnn, fnn"),
        ("model: fm\n", ["optimizer.name=ftrl"], "optimizer 'ftrl' is only available for model 'lr'"),
        ("", ["epochs"], "--set 'epochs': expected key=value"),
        ("- a list\n", [], "a config must be a mapping"),
    ],
)
def test_typos_and_bad_values_are_refused_by_name(
    tmp_path: Path, yaml_text: str, overrides: list[str], message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as error:
        load_config(path, overrides)
    assert message in str(error.value)


def test_overrides_never_change_the_model_defaults() -> None:
    before = copy.deepcopy(MODEL_DEFAULTS)
    load_config(None, ["optimizer.name=ftrl", "optimizer.lr=0.5"], model="lr")
    with pytest.raises(ConfigError):
        load_config(None, ["optimizer.name=ftrl"], model="fm")
    assert before == MODEL_DEFAULTS
    assert load_config(None, model="fm").optimizer.name == "adam"


TUNED = sorted((Path(__file__).parents[2] / "configs" / "tuned").glob("*.yaml"))


@pytest.mark.parametrize("path", TUNED, ids=[p.stem for p in TUNED])
def test_every_committed_tuned_config_is_a_valid_config_of_its_model(path: Path) -> None:
    config = load_config(path)  # what `apprank train --config configs/tuned/MODEL.yaml` reads
    assert config.model == path.stem
    config.model_params()  # the search wrote hyper-parameters its model accepts
    assert path.read_text().startswith("# apprank tune: best of")  # written by the search, not by hand
