"""The model registry: name -> (recipe, hyperparameter class). Imports torch.

An explicit table, never a lookup by attribute name, so the set of servable models is visible here.
Every entry is a composition of the same blocks (``model.nets.composed``); the comments name the
model of the DeepFM paper (Guo et al., 2017) each one is, then the lineage's later models
(xDeepFM, AutoInt, DCN-V2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from model.encoder import InputLayout
from model.nets.blocks import ModelBatch
from model.nets.composed import ComposedModel, Product, Recipe
from model.nets.params import (
    AutoIntParams,
    DCNV2Params,
    DeepParams,
    FMParams,
    LRParams,
    Params,
    XDeepFMParams,
)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model; ``pretrain="fm"`` initialises its embedding from an FM."""

    name: str
    description: str
    params: type[Params]
    recipe: Recipe
    pretrain: str | None = None


def _spec(name: str, description: str, params: type[Params], recipe: Recipe, **extra: Any) -> ModelSpec:
    return ModelSpec(name, description, params, recipe, **extra)


def _fm_with(deep: Product | None, *, shared: bool = True) -> Recipe:
    """First order + FM, plus a deep component when given."""
    return Recipe(linear=True, fm=True, deep=deep, shared=shared)


REGISTRY: Mapping[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _spec("lr", "logistic regression", LRParams, Recipe(linear=True)),
        _spec("fm", "factorization machine", FMParams, _fm_with(None)),
        _spec("dnn", "MLP over the field embeddings", DeepParams, Recipe(deep="none")),
        _spec(
            "fnn",
            "FNN: DNN with its embedding initialised from a trained FM",
            DeepParams,
            Recipe(deep="none"),
            pretrain="fm",
        ),
        _spec("ipnn", "PNN with inner products", DeepParams, Recipe(deep="inner")),
        _spec("opnn", "PNN with outer products", DeepParams, Recipe(deep="outer")),
        _spec("pnn_star", "PNN* with inner and outer products", DeepParams, Recipe(deep="both")),
        _spec(
            "lr_dnn",
            "LR & DNN (Wide & Deep with a linear wide part)",
            DeepParams,
            Recipe(linear=True, deep="none"),
        ),
        _spec(
            "fm_dnn",
            "FM & DNN with separate embeddings",
            DeepParams,
            _fm_with("none", shared=False),
        ),
        _spec(
            "deepfm",
            "DeepFM-D: FM and DNN sharing one embedding",
            DeepParams,
            _fm_with("none"),
        ),
        _spec(
            "deepfm_ip",
            "DeepFM-IP: FM sharing its embedding with an IPNN",
            DeepParams,
            _fm_with("inner"),
        ),
        _spec(
            "deepfm_op",
            "DeepFM-OP: FM sharing its embedding with an OPNN",
            DeepParams,
            _fm_with("outer"),
        ),
        _spec(
            "deepfm_star",
            "DeepFM-*P: FM sharing its embedding with a PNN*",
            DeepParams,
            _fm_with("both"),
        ),
        _spec(
            "xdeepfm",
            "xDeepFM: first order, a CIN and a DNN sharing one embedding",
            XDeepFMParams,
            Recipe(linear=True, deep="none", explicit="cin"),
        ),
        _spec(
            "autoint",
            "AutoInt: multi-head self-attention over the field embeddings (+ a DNN: AutoInt+)",
            AutoIntParams,
            Recipe(deep="none", explicit="attention"),
        ),
        _spec(
            "dcnv2",
            "DCN-V2: a full-rank cross network and a DNN in parallel over one embedding",
            DCNV2Params,
            Recipe(deep="none", explicit="cross"),
        ),
    )  # fmt: skip
}


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; the error lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def build_model(name: str, layout: InputLayout, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered model with validated hyperparameters."""
    spec = model_spec(name)
    typed = spec.params.model_validate(dict(params or {}))
    assert isinstance(typed, LRParams | FMParams | DeepParams)
    return ComposedModel(layout, typed, spec.recipe)


__all__ = ["REGISTRY", "ModelBatch", "ModelSpec", "build_model", "model_spec"]
