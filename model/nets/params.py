"""Typed hyperparameters of the models: one frozen pydantic model per family, unknown keys refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class LRParams(BaseModel):
    """Logistic regression has no hyperparameters of its own (regularization lives in training)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class FMParams(BaseModel):
    """Factorization machine: the embedding (latent factor) dimension."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedding_dim: Annotated[int, Field(ge=1, le=512)] = 10


class DeepParams(BaseModel):
    """Models with a deep component: embedding plus an MLP (the DeepFM paper's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedding_dim: Annotated[int, Field(ge=1, le=512)] = 10
    hidden_units: tuple[Annotated[int, Field(ge=1, le=8192)], ...] = (400, 400, 400)
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    batch_norm: bool = True
