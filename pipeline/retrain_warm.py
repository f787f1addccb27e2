"""Warm start: the serving version's encoder and weights, grown to the ids of the new window.

The vocabulary rule, per field with a vocabulary (categorical, multi-valued, log-bucketed):

* known ids keep their index, so their embedding rows (every table: the FM/deep embedding and the
  first-order weights) are copied bit for bit;
* ids first seen in the window are appended after them, most frequent first (the fitter's order), up
  to the field's ``max_vocab``; beyond it they stay out of vocabulary. Their rows start from the model's
  fresh initialisation;
* ids that vanish from the window are kept, with their rows: a user or an app absent for a week comes
  back to what was learned about it. The vocabulary therefore only grows between warm starts; a cold
  ``apprank train`` refits it from scratch (and drops them).

Fields without a vocabulary keep the serving encoder's state (hash buckets, standardization, quantile
boundaries), so every dense weight keeps its meaning.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from model.bundle import ENCODER, WEIGHTS, Bundle
from model.encoder import CategoricalState, FeatureEncoder, InputLayout, InputRole, LogBucketState, MultiState
from model.nets import build_model
from training.config import TrainConfig, deep_merge
from training.pipeline import fit_on
from training.readers.base import Chunk

# Buffers that describe the layout (per-field offsets into a table): the grown model's own are right.
LAYOUT_BUFFERS = ("index_offsets", "value_rows")
TABLE = "table.weight"


def grow_vocabulary(old: list[Any], new: list[Any], cap: int | None) -> list[Any]:
    """``old`` followed by the tokens of ``new`` it lacks, in ``new``'s order, at most ``cap`` in all."""
    known = set(old)
    grown = list(old) + [token for token in new if token not in known]
    return grown if cap is None else grown[: max(cap, len(old))]


def grow_encoder(serving: FeatureEncoder, chunks: Iterator[Chunk]) -> FeatureEncoder:
    """The serving encoder with the vocabularies grown by the ids of ``chunks`` (see the module rule)."""
    fitted = fit_on(serving.schema, chunks)
    states: dict[str, Any] = {}
    for spec in serving.schema.fields:
        old, new = serving.states[spec.name], fitted.states[spec.name]
        if isinstance(old, CategoricalState | MultiState | LogBucketState) and type(new) is type(old):
            vocabulary = grow_vocabulary(old.vocabulary, new.vocabulary, spec.max_vocab)
            states[spec.name] = old.model_copy(update={"vocabulary": vocabulary})
        else:
            states[spec.name] = old
    return FeatureEncoder(serving.schema, states)


def _table_blocks(layout: InputLayout) -> list[tuple[int, int]]:
    """(first row, rows) of every field in a ``FieldEmbedding`` table: index, then value, then bag fields."""
    ordered = [
        *layout.of_role(InputRole.INDEX),
        *layout.of_role(InputRole.VALUE),
        *layout.of_role(InputRole.BAG),
    ]
    blocks, start = [], 0
    for field in ordered:
        size = 1 if field.role is InputRole.VALUE else field.cardinality
        blocks.append((start, size))
        start += size
    return blocks


def remap_table(
    old: torch.Tensor, fresh: torch.Tensor, old_layout: InputLayout, new_layout: InputLayout
) -> torch.Tensor:
    """``fresh`` (the grown model's initialised table) with every known row copied from ``old``."""
    out = fresh.clone()
    for (old_start, old_rows), (new_start, new_rows) in zip(
        _table_blocks(old_layout), _table_blocks(new_layout), strict=True
    ):
        if new_rows < old_rows:
            raise ValueError(
                f"a field shrank from {old_rows} to {new_rows} rows: warm start needs growth only"
            )
        out[new_start : new_start + old_rows] = old[old_start : old_start + old_rows]
    return out


def warm_state(
    state: Mapping[str, torch.Tensor], old_layout: InputLayout, new_layout: InputLayout, config: TrainConfig
) -> dict[str, torch.Tensor]:
    """The serving weights laid out for the grown encoder: tables remapped, the rest copied.

    Raises:
        ValueError: a weight other than a table changed shape (the architecture differs).
    """
    torch.manual_seed(config.seed)
    fresh = build_model(config.model, new_layout, config.params).state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in fresh.items():
        if key.rsplit(".", 1)[-1] in LAYOUT_BUFFERS:
            out[key] = value
        elif key.endswith(TABLE):
            out[key] = remap_table(state[key], value, old_layout, new_layout)
        elif state[key].shape != value.shape:
            raise ValueError(
                f"{key}: shape {tuple(state[key].shape)} -> {tuple(value.shape)}: not a warm start"
            )
        else:
            out[key] = state[key].clone()
    return out


def write_warm_bundle(
    serving: Bundle, chunks: Iterator[Chunk], config: TrainConfig, out: Path
) -> FeatureEncoder:
    """The starting point of the candidate, as a bundle ``train_bundle(resume=out)`` takes: the serving
    bundle's files with the encoder grown on ``chunks`` and the remapped weights (its ONNX graph is the
    serving one's, never served: only the encoder and ``weights.pt`` are read from it).
    """
    grown = grow_encoder(serving.encoder, chunks)
    write_grown_bundle(serving, grown, config, out)
    return grown


def write_grown_bundle(serving: Bundle, grown: FeatureEncoder, config: TrainConfig, out: Path) -> None:
    """``write_warm_bundle`` with the grown encoder already fitted (the prepared export fits it)."""
    state = torch.load(serving.path / WEIGHTS, map_location="cpu", weights_only=True)
    weights = warm_state(state, serving.encoder.layout, grown.layout, config)
    staging = out.parent / f".{out.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(serving.path, staging)
    grown.save(staging / ENCODER)
    torch.save(weights, staging / WEIGHTS)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def train_config_of(serving_hyperparameters: Mapping[str, Any], changes: Mapping[str, Any]) -> TrainConfig:
    """The serving version's training configuration with ``changes`` on top (never its architecture)."""
    base = TrainConfig.model_validate(dict(serving_hyperparameters))
    for key in ("model", "params"):
        if key in changes and changes[key] != getattr(base, key):
            raise ValueError(f"a warm start keeps the serving version's {key}: train cold to change it")
    # section by section: ``optimizer: {lr: 1e-4}`` changes the step and keeps the serving optimizer
    data = deep_merge(base.model_dump(mode="python"), dict(changes))
    return TrainConfig.model_validate(data)


def growth(before: FeatureEncoder, after: FeatureEncoder) -> dict[str, tuple[int, int]]:
    """(rows before, rows after) of every field whose cardinality grew."""
    return {
        old.name: (old.cardinality, new.cardinality)
        for old, new in zip(before.layout.fields, after.layout.fields, strict=True)
        if new.cardinality != old.cardinality
    }
