"""Warm start: known ids keep their embedding rows bit for bit, new ids get new rows, none vanish."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from apprank.bootstrap import BootstrapResult
from model.bundle import WEIGHTS, Bundle, read_bundle
from model.encoder import CategoricalState, FeatureEncoder
from model.export import model_batch
from model.nets import build_model
from pipeline.gate import GateConfig, decide
from pipeline.retrain_warm import grow_encoder, grow_vocabulary, train_config_of, warm_state
from training.config import TrainConfig
from training.datasets import resolve_dataset
from training.readers.base import Chunk

NEW_USERS = [f"new-user-{i}" for i in range(7)]


@pytest.fixture(scope="module")
def serving(tiny_store: BootstrapResult) -> Bundle:
    return read_bundle(tiny_store.config.models_dir / "deepfm")


@pytest.fixture(scope="module")
def window(tiny_store: BootstrapResult, serving: Bundle) -> Chunk:
    """400 logged rows, the first 7 from users never seen before."""
    splits = resolve_dataset(tiny_store.config.data_dir, serving.schema)
    chunk = next(iter(splits.train.chunks(400)))
    users = chunk.columns["user_id"].astype(object).copy()
    users[: len(NEW_USERS)] = NEW_USERS
    return Chunk(chunk.columns | {"user_id": users}, chunk.labels, 1)


def vocabulary(encoder: FeatureEncoder, field: str) -> list[Any]:
    state = encoder.states[field]
    assert isinstance(state, CategoricalState)
    return list(state.vocabulary)


def forward(
    bundle_encoder: FeatureEncoder, model: torch.nn.Module, columns: dict[str, Any], rows: int
) -> Any:
    encoded = bundle_encoder.transform(columns, rows)
    batch = model_batch(encoded, bundle_encoder.layout)
    with torch.no_grad():
        return model.embedding(batch), model(batch)  # type: ignore[operator]


def models(serving: Bundle, grown: FeatureEncoder) -> tuple[torch.nn.Module, torch.nn.Module, TrainConfig]:
    config = train_config_of(serving.manifest.hyperparameters, {})
    state = torch.load(serving.path / WEIGHTS, map_location="cpu", weights_only=True)
    old = build_model(config.model, serving.encoder.layout, config.params)
    old.load_state_dict(state)
    new = build_model(config.model, grown.layout, config.params)
    new.load_state_dict(warm_state(state, serving.encoder.layout, grown.layout, config))
    return old.eval(), new.eval(), config


def test_known_ids_keep_their_rows_bit_for_bit_and_new_ids_get_rows(serving: Bundle, window: Chunk) -> None:
    grown = grow_encoder(serving.encoder, iter([window]))
    before, after = vocabulary(serving.encoder, "user_id"), vocabulary(grown, "user_id")
    assert after[: len(before)] == before  # no id vanishes, none moves
    assert after[len(before) :] == NEW_USERS or set(after[len(before) :]) == set(NEW_USERS)
    old, new, _ = models(serving, grown)
    known = {name: values[len(NEW_USERS) :] for name, values in window.columns.items()}
    rows = window.num_rows - len(NEW_USERS)
    old_embedded, old_logits = forward(serving.encoder, old, known, rows)
    new_embedded, new_logits = forward(grown, new, known, rows)
    assert torch.equal(old_embedded, new_embedded) and torch.equal(old_logits, new_logits)
    fresh = {name: values[: len(NEW_USERS)] for name, values in window.columns.items()}
    codes = grown.transform(fresh, len(NEW_USERS))["user_id"]
    assert sorted(codes.tolist()) == list(range(len(before) + 2, len(after) + 2))  # rows after the known
    table = new.get_parameter("embedding.table.weight")
    user_block = grown.layout.fields[[f.name for f in grown.layout.fields].index("user_id")]
    assert user_block.cardinality == serving.encoder.layout.fields[0].cardinality + len(NEW_USERS)
    assert table.shape[0] == old.get_parameter("embedding.table.weight").shape[0] + len(NEW_USERS)


def test_a_warm_start_keeps_the_architecture(serving: Bundle) -> None:
    with pytest.raises(ValueError, match="keeps the serving version's params"):
        train_config_of(serving.manifest.hyperparameters, {"params": {"embedding_dim": 8}})


def test_vocabulary_growth_respects_the_cap_but_never_drops_known_ids() -> None:
    assert grow_vocabulary(["a", "b"], ["c", "a", "d"], None) == ["a", "b", "c", "d"]
    assert grow_vocabulary(["a", "b"], ["c", "a", "d"], 3) == ["a", "b", "c"]
    assert grow_vocabulary(["a", "b", "c"], ["d"], 2) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("candidate", "serving", "passed", "reason"),
    [
        ({"auc": 0.80, "logloss": 0.30, "calibration": 1.02}, {"auc": 0.80, "logloss": 0.30}, True, ""),
        (
            {"auc": 0.78, "logloss": 0.30, "calibration": 1.02},
            {"auc": 0.80, "logloss": 0.30},
            False,
            "AUC 0.7800",
        ),
        (
            {"auc": 0.80, "logloss": 0.35, "calibration": 1.02},
            {"auc": 0.80, "logloss": 0.30},
            False,
            "logloss",
        ),
        ({"auc": 0.80, "logloss": 0.30, "calibration": 1.40}, None, False, "calibration 1.400"),
        ({"auc": float("nan"), "logloss": 0.30, "calibration": 1.0}, None, False, "not a number"),
    ],
)
def test_the_gate_rules(
    candidate: dict[str, float], serving: dict[str, float] | None, passed: bool, reason: str
) -> None:
    figures = candidate | {"rows": 1000.0, "observed_ctr": 0.1}
    decision = decide(figures, serving, GateConfig())
    assert decision.passed is passed
    assert all(reason in r for r in decision.reasons[:1]) and (passed or decision.reasons)


def test_the_gate_refuses_a_held_out_day_too_small_to_judge() -> None:
    decision = decide(
        {"auc": 0.8, "logloss": 0.3, "calibration": 1.0, "rows": 50.0, "observed_ctr": 0.1},
        None,
        GateConfig(),
    )
    assert not decision.passed and "fewer than the 200 rows" in decision.reasons[0]


def test_grown_vocabularies_are_what_the_encoder_serves(serving: Bundle, window: Chunk) -> None:
    grown = grow_encoder(serving.encoder, iter([window]))
    codes = grown.transform({"user_id": np.array(NEW_USERS)}, len(NEW_USERS))["user_id"]
    assert (codes > 1).all()  # known now: not missing, not out of vocabulary
    assert (serving.encoder.transform({"user_id": np.array(NEW_USERS)}, len(NEW_USERS))["user_id"] == 1).all()


def test_a_retrain_config_changes_a_section_key_by_key(serving: Bundle) -> None:
    served = serving.manifest.hyperparameters
    config = train_config_of(served, {"optimizer": {"lr": 0.0001}, "warm_lr_factor": 1.0})
    assert config.optimizer.lr == 0.0001 and config.warm_lr_factor == 1.0
    others = {k: v for k, v in served["optimizer"].items() if k != "lr"}
    assert {k: v for k, v in config.optimizer.model_dump().items() if k != "lr"} == others  # kept
