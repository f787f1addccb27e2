"""The model registry: name -> (module class, hyperparameter class). Imports torch.

An explicit table, never a lookup by attribute name, so the set of servable models is visible here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from torch import nn

from model.encoder import InputLayout
from model.nets.blocks import ModelBatch
from model.nets.deepfm import DeepFM
from model.nets.fm import FM
from model.nets.lr import LogisticRegression
from model.nets.params import DeepParams, FMParams, LRParams


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model."""

    name: str
    description: str
    params: type[BaseModel]
    build: Callable[[InputLayout, Any], nn.Module]


REGISTRY: Mapping[str, ModelSpec] = {
    "lr": ModelSpec("lr", "logistic regression", LRParams, LogisticRegression),
    "fm": ModelSpec("fm", "factorization machine", FMParams, FM),
    "deepfm": ModelSpec("deepfm", "DeepFM-D: FM and DNN sharing one embedding", DeepParams, DeepFM),
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
    return spec.build(layout, spec.params.model_validate(dict(params or {})))


__all__ = ["REGISTRY", "ModelBatch", "ModelSpec", "build_model", "model_spec"]
