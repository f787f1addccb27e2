"""Typed hyperparameters of the models: one frozen pydantic model per family, unknown keys refused.

Each class also declares ``search_space``: the dimensions ``apprank tune`` searches for that family,
keyed by the ``TrainConfig`` path each value is written to (``model.nets.search``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from model.nets.search import (
    SHALLOW_SPACE,
    TRAINING_SPACE,
    Choice,
    FloatRange,
    IntRange,
    LayerStack,
    SearchSpace,
)

EmbeddingDim = Annotated[int, Field(ge=1, le=512)]
Units = tuple[Annotated[int, Field(ge=1, le=8192)], ...]


class Params(BaseModel):
    """What every family's parameters share: frozen, unknown keys refused, a declared search space."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    search_space: ClassVar[SearchSpace]


class LRParams(Params):
    """Logistic regression has no hyperparameters of its own (regularization lives in training)."""

    search_space: ClassVar[SearchSpace] = SHALLOW_SPACE


class FMParams(Params):
    """Factorization machine: the embedding (latent factor) dimension."""

    search_space: ClassVar[SearchSpace] = {
        **SHALLOW_SPACE,
        "params.embedding_dim": Choice((10, 16, 32, 64)),
    }

    embedding_dim: EmbeddingDim = 10


DEEP_SPACE: SearchSpace = {
    **TRAINING_SPACE,
    "params.embedding_dim": Choice((10, 16, 32, 64)),
    "params.hidden_units": LayerStack(1, 4, (100, 200, 400, 800)),
    "params.dropout": FloatRange(0.0, 0.5),
    "params.batch_norm": Choice((True, False)),
}


class DeepParams(Params):
    """Models with a deep component: embedding plus an MLP (the DeepFM paper's defaults)."""

    search_space: ClassVar[SearchSpace] = DEEP_SPACE

    embedding_dim: EmbeddingDim = 10
    hidden_units: Units = (400, 400, 400)
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    batch_norm: bool = True


class XDeepFMParams(DeepParams):
    """xDeepFM: a Compressed Interaction Network beside the MLP (Lian et al., 2018).

    Attributes:
        cin_layer_units: feature maps of each CIN layer.
        cin_split_half: every layer but the last sends half its maps to the output, half onward.
    """

    search_space: ClassVar[SearchSpace] = {
        **DEEP_SPACE,
        "params.cin_layer_units": LayerStack(1, 3, (16, 32, 64)),
    }

    cin_layer_units: tuple[Annotated[int, Field(ge=2, le=1024)], ...] = Field(
        default=(32, 32, 32), min_length=1
    )
    cin_split_half: bool = True


class AutoIntParams(DeepParams):
    """AutoInt: stacked multi-head self-attention over the field embeddings (Song et al., 2019).

    An empty ``hidden_units`` (the default) is AutoInt itself; with hidden units an MLP is added
    beside the attention layers (AutoInt+).

    Attributes:
        attention_layers: interacting layers stacked.
        attention_heads: heads per layer.
        attention_dim: width of each head.
        attention_residual: add a projected residual connection to each layer's output.
    """

    search_space: ClassVar[SearchSpace] = {
        **DEEP_SPACE,
        "params.hidden_units": LayerStack(0, 3, (100, 200, 400)),
        "params.attention_layers": IntRange(1, 4),
        "params.attention_heads": Choice((1, 2, 4)),
        "params.attention_dim": Choice((8, 16, 32)),
    }

    hidden_units: Units = ()
    attention_layers: Annotated[int, Field(ge=1, le=16)] = 3
    attention_heads: Annotated[int, Field(ge=1, le=16)] = 2
    attention_dim: Annotated[int, Field(ge=1, le=256)] = 16
    attention_residual: bool = True


class DCNV2Params(DeepParams):
    """DCN-V2: a full-rank cross network beside the MLP (Wang et al., 2021), in parallel.

    Attributes:
        cross_layers: cross layers stacked, each x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.
    """

    search_space: ClassVar[SearchSpace] = {
        **DEEP_SPACE,
        "params.cross_layers": IntRange(1, 4),
        "params.embedding_dim": Choice((10, 16, 32)),
    }

    cross_layers: Annotated[int, Field(ge=1, le=16)] = 3
