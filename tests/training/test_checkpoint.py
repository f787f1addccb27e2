"""Step checkpoints: a run interrupted after a checkpoint and resumed ends with exactly the weights and
history of the uninterrupted run (streamed and in memory, mid-epoch and at an epoch's end), and a
checkpoint of another run is refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from model.bundle import WEIGHTS, read_bundle
from model.encoder import InputLayout
from model.nets import build_model
from tests.training.stream_support import small_config, write_dataset
from training.checkpoint import Checkpointer, is_checkpoint_dir, load_checkpoint
from training.config import TrainConfig
from training.datasets import resolve_dataset
from training.pipeline import prepare, train_bundle
from training.prepared.writer import prepare_dataset
from training.sources import open_stream
from training.trainer import EvalData, History, TrainData, Trainer

RUN = {"what": "test"}


class Interrupted(Exception):
    """Stands for a killed process."""


@dataclass(frozen=True)
class Data:
    layout: InputLayout
    train: TrainData
    valid: EvalData


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("checkpoint") / "raw")


def _data(raw: Path, streamed: bool, config: TrainConfig) -> Data:
    if not streamed:
        encoder, memory = prepare(resolve_dataset(raw), config, None)
        return Data(encoder.layout, memory.train, memory.valid)
    prepared = raw.parent / "prepared"
    if not prepared.exists():
        prepare_dataset(resolve_dataset(raw), prepared, config)
    stream = open_stream(prepared, config, None)
    return Data(stream.encoder.layout, stream.train, stream.valid)


def _run(
    config: TrainConfig,
    data: Data,
    folder: Path | None = None,
    *,
    stop_at: int | None = None,
    resume: bool = False,
) -> tuple[nn.Module, History]:
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.layout, config.params)

    def on_step(step: int) -> None:
        if step == stop_at:
            raise Interrupted

    every = config.checkpoint_every or 1
    checkpoints = Checkpointer(folder, every, RUN, None) if folder is not None else None
    checkpoint = load_checkpoint(folder, RUN) if resume and folder is not None else None
    history = Trainer(model, config, on_step=on_step).fit(
        data.train, data.valid, checkpoints=checkpoints, resume=checkpoint
    )
    return model, history


def _figures(history: History) -> list[tuple[int, float, dict[str, float], float]]:
    return [(e.epoch, e.train_loss, e.valid, e.lr) for e in history.epochs]  # not the timings


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "in-memory"])
@pytest.mark.parametrize("every", [5, 12], ids=["mid-epoch", "epoch-end"])
def test_a_resumed_run_continues_the_same_run(raw: Path, tmp_path: Path, streamed: bool, every: int) -> None:
    config = small_config("epochs=3", f"checkpoint_every={every}", "early_stopping.patience=5")
    data = _data(raw, streamed, config)
    whole, whole_history = _run(config, data)
    with pytest.raises(Interrupted):
        _run(config, data, tmp_path / "ck", stop_at=15)  # 12 steps an epoch: stops in epoch 2
    assert is_checkpoint_dir(tmp_path / "ck")
    assert load_checkpoint(tmp_path / "ck", RUN).loop.global_step == (10 if every == 5 else 12)
    resumed, resumed_history = _run(config, data, tmp_path / "ck", resume=True)
    expected = whole.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in resumed.state_dict().items())
    assert _figures(resumed_history) == _figures(whole_history) and len(whole_history.epochs) == 3


def test_a_checkpoint_of_another_run_is_refused(raw: Path, tmp_path: Path) -> None:
    config = small_config("epochs=1", "checkpoint_every=4")
    _run(config, _data(raw, True, config), tmp_path / "ck")
    with pytest.raises(ValueError, match="another run .*what"):
        load_checkpoint(tmp_path / "ck", {"what": "else"})
    with pytest.raises(ValueError, match="no step checkpoint"):
        load_checkpoint(tmp_path, RUN)


def test_train_resume_from_the_checkpoint_folder(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(
        "epochs=2", "checkpoint_every=7", f"prepared_cache={tmp_path / 'cache'}", "memory_budget=1KB"
    )
    whole = train_bundle(raw, tmp_path / "whole", config)
    assert whole is not None and not (tmp_path / "whole.checkpoints").exists()  # removed once complete
    original = Trainer._step
    calls = {"n": 0}

    def failing(self: Trainer, step: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 17:
            raise Interrupted
        return original(self, step)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "_step", failing)
    with pytest.raises(Interrupted):
        train_bundle(raw, tmp_path / "cut", config)
    monkeypatch.setattr(Trainer, "_step", original)
    assert not (tmp_path / "cut").exists() and is_checkpoint_dir(tmp_path / "cut.checkpoints")
    resumed = train_bundle(raw, tmp_path / "cut", config, resume=tmp_path / "cut.checkpoints")
    assert resumed is not None
    a = torch.load(read_bundle(tmp_path / "whole").path / WEIGHTS, weights_only=True)
    b = torch.load(read_bundle(tmp_path / "cut").path / WEIGHTS, weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed.metrics["test"] == whole.metrics["test"]
