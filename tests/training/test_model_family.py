"""The DeepFM paper's model family on real rows: every registered model trains and exports with parity.

One encoder is fitted on the first 5,000 training rows of frappe_ctr and the encoded splits are shared
by every case; each model then trains one short epoch (``Trainer``) and is exported through the real
exporter with the ONNX parity check. Further tests pin what makes the family members differ: FNN's
embedding starts from a trained FM's, FM & DNN has two embedding tables where DeepFM-D has one, and the
product layers widen the MLP's input by the expected number of signals.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from model.encoder import InputLayout
from model.export import export_onnx, parity_check, torch_ctr
from model.nets import REGISTRY, build_model
from model.nets.blocks import FieldEmbedding
from model.nets.params import DeepParams
from training import pipeline
from training.config import TrainConfig, load_config
from training.datasets import resolve_dataset
from training.pipeline import Splits, _initialise_from_fm, prepare
from training.trainer import Trainer, evaluate

ROWS = 5_000
EVAL_ROWS = 2_000
# frappe_ctr: 16 categorical fields, embedding 10 -> 160 inputs, 120 field pairs, 10 x 10 outer product
FIELDS, DIM = 16, 10


def quick_config(name: str, *extra: str) -> TrainConfig:
    """One epoch of ``name``: 20 steps of 250 rows with a large step size, a small MLP when it has one."""
    sets = ["epochs=1", "batch_size=250", "optimizer.lr=0.01", "precision=fp32", f"max_rows={ROWS}", *extra]
    if issubclass(REGISTRY[name].params, DeepParams):
        sets.append("hidden_units=[32,32]")
    return load_config(None, sets, model=name)


@pytest.fixture(scope="module")
def frappe(data_dir: Path) -> tuple[InputLayout, Splits]:
    """The encoder's layout and the encoded splits (valid and test cut to 2,000 rows)."""
    splits = resolve_dataset(data_dir / "frappe_ctr")
    encoder, data = prepare(splits, quick_config("deepfm"), None)
    assert data.test is not None
    small = replace(data, valid=data.valid.head(EVAL_ROWS), test=data.test.head(EVAL_ROWS))
    return encoder.layout, small


def embedding_tables(model: nn.Module) -> list[FieldEmbedding]:
    """The model's latent-vector tables (the first-order part's one-wide table excluded)."""
    return [m for m in model.modules() if isinstance(m, FieldEmbedding) and m.dim > 1]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_model_trains_an_epoch_and_exports_with_parity(
    name: str, frappe: tuple[InputLayout, Splits], tmp_path: Path
) -> None:
    layout, data = frappe
    config = quick_config(name)
    torch.manual_seed(0)
    model = build_model(name, layout, config.params)
    untrained = evaluate(model, data.valid, config.eval_batch_size)["logloss"]
    history = Trainer(model, config).fit(data.train, data.valid)
    assert len(history.epochs) == 1 and history.train_samples == ROWS
    trained = evaluate(model, data.valid, config.eval_batch_size)
    # a near-zero start predicts about 0.5 everywhere (logloss ~ln 2); twenty steps do better
    assert trained["logloss"] < untrained - 0.01, (untrained, trained)
    assert data.test is not None
    sample = data.test.encoded(layout)
    export_onnx(model, layout, sample, tmp_path / "model.onnx")
    report = parity_check(model, layout, sample, tmp_path / "model.onnx")
    assert report.passed and report.rows == EVAL_ROWS and report.max_abs_diff <= 1e-5
    assert torch_ctr(model, layout, sample).std() > 1e-3  # distinct predictions were compared


def test_fnn_embedding_starts_from_the_trained_fm(
    frappe: tuple[InputLayout, Splits], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, data = frappe
    built: list[tuple[str, nn.Module, torch.Tensor]] = []

    def recording_build(name: str, layout: InputLayout, params: Any = None) -> nn.Module:
        model = build_model(name, layout, params)
        built.append((name, model, model.get_parameter("embedding.table.weight").detach().clone()))
        return model

    monkeypatch.setattr(pipeline, "build_model", recording_build)
    config = quick_config("fnn", "epochs=2", "batch_size=256")
    torch.manual_seed(0)
    fnn = build_model("fnn", layout, config.params)
    own_start = fnn.get_parameter("embedding.table.weight").detach().clone()
    _initialise_from_fm(fnn, layout, data, config, None)
    ((name, fm, fm_start),) = built
    assert name == "fm" and fm_start.shape == (own_start.shape[0], DIM)
    table = fnn.get_parameter("embedding.table.weight")
    torch.testing.assert_close(table, fm.get_parameter("embedding.table.weight"), rtol=0, atol=0)
    assert not torch.equal(table, own_start)
    moved = (table - fm_start).abs().max()
    assert moved > 10 * fm_start.abs().max()  # trained, far from its N(0, 1e-4) start
    assert evaluate(fm, data.valid, 65_536)["auc"] > 0.75  # and the FM it came from learned


def test_fnn_pretraining_runs_with_the_runs_batching(
    frappe: tuple[InputLayout, Splits], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, data = frappe
    seen: list[TrainConfig] = []

    class RecordingTrainer(Trainer):
        def __init__(self, model: nn.Module, config: TrainConfig, *args: Any) -> None:
            seen.append(config)
            super().__init__(model, config, *args)

    monkeypatch.setattr(pipeline, "Trainer", RecordingTrainer)
    config = quick_config("fnn", "batch_size=256", "threads=1")
    _initialise_from_fm(build_model("fnn", layout, config.params), layout, data, config, None)
    (fm_config,) = seen
    assert fm_config.model == "fm" and fm_config.optimizer.lr == 0.01  # the FM's own defaults
    assert (fm_config.batch_size, fm_config.epochs, fm_config.threads) == (256, 1, 1)


def test_fm_dnn_has_separate_embeddings_and_deepfm_shares_one(frappe: tuple[InputLayout, Splits]) -> None:
    layout, data = frappe
    separate, shared = build_model("fm_dnn", layout), build_model("deepfm", layout)
    assert len(embedding_tables(separate)) == 2 and len(embedding_tables(shared)) == 1
    extra = sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters())
    assert extra == embedding_tables(shared)[0].table.weight.numel()  # one more table, nothing else
    # in FM & DNN the deep part reads its own table: zeroing the FM's table leaves the deep term intact
    batch, _ = data.valid.take(torch.arange(64))
    separate.eval()
    with torch.no_grad():
        nn.init.normal_(separate.get_parameter("deep_embedding.table.weight"), std=0.5)
        deep_embedded = separate.deep_embedding(batch)  # type: ignore[operator]
        expected_deep = separate.deep(deep_embedded)  # type: ignore[operator]
        separate.get_parameter("embedding.table.weight").zero_()
        linear = separate.linear(batch)  # type: ignore[operator]
        torch.testing.assert_close(separate(batch), linear + expected_deep)


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("dnn", FIELDS * DIM),
        ("ipnn", FIELDS * DIM + FIELDS * (FIELDS - 1) // 2),
        ("opnn", FIELDS * DIM + DIM * DIM),
        ("pnn_star", FIELDS * DIM + FIELDS * (FIELDS - 1) // 2 + DIM * DIM),
        ("deepfm", FIELDS * DIM),
        ("deepfm_ip", FIELDS * DIM + FIELDS * (FIELDS - 1) // 2),
        ("deepfm_op", FIELDS * DIM + DIM * DIM),
        ("deepfm_star", FIELDS * DIM + FIELDS * (FIELDS - 1) // 2 + DIM * DIM),
    ],
)
def test_product_layers_widen_the_mlp_input(
    name: str, width: int, frappe: tuple[InputLayout, Splits]
) -> None:
    layout, _ = frappe
    assert layout.num_fields == FIELDS
    model = build_model(name, layout)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert (first.in_features, first.out_features) == (width, 400)


@pytest.mark.parametrize("spread", [1.0, 5.0, 50.0])
def test_platt_fit_converges_on_overconfident_logits(spread: float) -> None:
    # FNN on frappe_ctr ends overconfident; the undamped Newton fit diverged (scale 3e14) on such logits
    from model.nets.calibration import fit_platt

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50_000, generator=generator) * spread
    labels = torch.bernoulli(torch.sigmoid(logits * (2.0 / spread) - 0.7), generator=generator)
    scale, shift = fit_platt(logits, labels)
    assert scale == pytest.approx(2.0 / spread, rel=0.05) and shift == pytest.approx(-0.7, abs=0.05)


@pytest.mark.parametrize(
    ("name", "scaling", "world", "factor"),
    [
        ("deepfm", "sqrt", 4, 2.0),
        ("deepfm", "none", 4, 1.0),
        ("deepfm", "sqrt", 1, 1.0),
        ("lr", "sqrt", 9, 3.0),
    ],
)
def test_lr_scaling_multiplies_the_learning_rate_by_sqrt_of_the_world(
    name: str, scaling: str, world: int, factor: float, frappe: tuple[InputLayout, Splits]
) -> None:
    from training.trainer import make_optimizer

    layout, _ = frappe
    config = load_config(None, [f"lr_scaling={scaling}"], model=name)
    optimizer = make_optimizer(build_model(name, layout), config, world=world)
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == [pytest.approx(config.optimizer.lr * factor)] * len(rates)


def test_learning_rate_decays_an_epoch_before_early_stopping(
    frappe: tuple[InputLayout, Splits], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the deep models' best AUC comes after a decay; decaying on the epoch that stops training wasted it
    layout, data = frappe
    config = load_config(None, ["epochs=20", "optimizer.lr=0.001"], model="lr")
    trainer = Trainer(build_model("lr", layout), config)
    scripted = iter([0.90, 0.91, 0.91, 0.92, 0.92, 0.92, 0.93])
    monkeypatch.setattr(trainer, "_train_epoch", lambda *_: 0.0)
    monkeypatch.setattr(trainer, "_validate", lambda _: {"auc": next(scripted), "logloss": 0.5})
    history = trainer.fit(data.train, data.valid)
    # stalls at epochs 3, 5, 6: a decay after each, stopped after two in a row (patience 2)
    assert [round(e.lr, 6) for e in history.epochs] == [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5]
    assert history.best_epoch == 4
