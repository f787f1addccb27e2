"""The DeepFM paper's model family as compositions of the blocks in ``model.nets.blocks``.

Every model is the sum of up to three components, each producing a logit [B]:

* ``linear``: first-order weights (LR, the "wide" part);
* ``fm``: the FM second-order term over an embedding;
* ``deep``: an MLP over the flattened embeddings, optionally concatenated with PNN product signals
  (``inner``: all pairwise <e_i, e_j>; ``outer``: the flattened outer product of the pooled
  embedding; ``both``: PNN*);
* ``explicit``: a block of explicit high-order interactions with a linear head (``cin``: xDeepFM's
  CIN; ``attention``: AutoInt's self-attention layers; ``cross``: DCN-V2's cross network). Beside an
  explicit component the deep one is optional: an empty ``hidden_units`` leaves it out (AutoInt).

``shared`` says whether the FM and deep components read one embedding (DeepFM) or two (FM & DNN).
A ``Recipe`` names the components; the registry maps each model name to its recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from model.encoder import InputLayout
from model.nets.blocks import (
    MLP,
    FactorizationMachine,
    FieldEmbedding,
    FirstOrder,
    InnerProduct,
    ModelBatch,
    OuterProduct,
)
from model.nets.interactions import CompressedInteraction, CrossNetwork, SelfAttention
from model.nets.params import AutoIntParams, DCNV2Params, DeepParams, FMParams, LRParams, XDeepFMParams

Product = Literal["none", "inner", "outer", "both"]
Explicit = Literal["cin", "attention", "cross"]


@dataclass(frozen=True)
class Recipe:
    """Which components a model sums, and whether its FM and deep parts share an embedding."""

    linear: bool = False
    fm: bool = False
    deep: Product | None = None
    shared: bool = True
    explicit: Explicit | None = None


class DeepComponent(nn.Module):
    """MLP over [flattened embeddings ++ product signals]: [B, F, D] -> [B]."""

    def __init__(self, num_fields: int, params: DeepParams, product: Product) -> None:
        super().__init__()
        dim = params.embedding_dim
        self.inner = InnerProduct(num_fields) if product in ("inner", "both") else None
        self.outer = OuterProduct() if product in ("outer", "both") else None
        width = num_fields * dim
        width += self.inner.num_pairs if self.inner is not None else 0
        width += dim * dim if self.outer is not None else 0
        self.mlp = MLP(
            width,
            params.hidden_units,
            activation=params.activation,
            dropout=params.dropout,
            batch_norm=params.batch_norm,
        )

    def forward(self, embedded: Tensor) -> Tensor:
        signals = [embedded.flatten(start_dim=1)]
        if self.inner is not None:
            signals.append(self.inner(embedded))
        if self.outer is not None:
            signals.append(self.outer(embedded))
        out: Tensor = self.mlp(signals[0] if len(signals) == 1 else torch.cat(signals, dim=1))
        return out


class ExplicitComponent(nn.Module):
    """An explicit-interaction block and a linear head over its output: [B, F, D] -> [B]."""

    def __init__(self, num_fields: int, params: DeepParams, kind: Explicit) -> None:
        super().__init__()
        flat = num_fields * params.embedding_dim
        self.block: nn.Module
        if kind == "cin":
            assert isinstance(params, XDeepFMParams), "a CIN needs XDeepFMParams"
            cin = CompressedInteraction(num_fields, params.cin_layer_units, split_half=params.cin_split_half)
            self.block, width = cin, cin.output_dim
        elif kind == "attention":
            assert isinstance(params, AutoIntParams), "self-attention needs AutoIntParams"
            width = num_fields * params.attention_heads * params.attention_dim
            self.block = _attention_stack(params)
        else:
            assert isinstance(params, DCNV2Params), "a cross network needs DCNV2Params"
            self.block, width = CrossNetwork(flat, params.cross_layers), flat
        self.kind = kind
        self.head = nn.Linear(width, 1)

    def forward(self, embedded: Tensor) -> Tensor:
        signal = embedded.flatten(start_dim=1) if self.kind == "cross" else embedded
        out: Tensor = self.block(signal)
        logit: Tensor = self.head(out.flatten(start_dim=1))
        return logit.squeeze(-1)


def _attention_stack(params: AutoIntParams) -> nn.Sequential:
    """``attention_layers`` interacting layers, the first reading the D-wide embeddings."""
    heads, dim = params.attention_heads, params.attention_dim
    widths = [params.embedding_dim] + [heads * dim] * (params.attention_layers - 1)
    return nn.Sequential(
        *(SelfAttention(width, heads, dim, residual=params.attention_residual) for width in widths)
    )


class ComposedModel(nn.Module):
    """Sum of the recipe's components; ``forward`` returns logits [B]."""

    def __init__(self, layout: InputLayout, params: LRParams | FMParams | DeepParams, recipe: Recipe) -> None:
        super().__init__()
        self.params = params
        self.recipe = recipe
        self.linear = FirstOrder(layout) if recipe.linear else None
        dim = getattr(params, "embedding_dim", 0)
        needs_embedding = recipe.fm or recipe.deep is not None or recipe.explicit is not None
        self.embedding = FieldEmbedding(layout, dim) if needs_embedding else None
        # FM & DNN: the deep part gets an embedding of its own
        separate = recipe.fm and recipe.deep is not None and not recipe.shared
        self.deep_embedding = FieldEmbedding(layout, dim) if separate else None
        self.fm = FactorizationMachine() if recipe.fm else None
        self.deep: DeepComponent | None = None
        self.explicit: ExplicitComponent | None = None
        if not isinstance(params, DeepParams):
            assert recipe.deep is None and recipe.explicit is None, "deep and explicit parts need DeepParams"
            return
        if recipe.explicit is not None:
            self.explicit = ExplicitComponent(layout.num_fields, params, recipe.explicit)
        if recipe.deep is not None and (recipe.explicit is None or params.hidden_units):
            self.deep = DeepComponent(layout.num_fields, params, recipe.deep)

    def forward(self, batch: ModelBatch) -> Tensor:
        """Logits [B]."""
        terms: list[Tensor] = []
        if self.linear is not None:
            terms.append(self.linear(batch))
        embedded = self.embedding(batch) if self.embedding is not None else None
        if self.fm is not None and embedded is not None:
            terms.append(self.fm(embedded))
        if self.deep is not None and embedded is not None:
            deep_input = self.deep_embedding(batch) if self.deep_embedding is not None else embedded
            terms.append(self.deep(deep_input))
        if self.explicit is not None and embedded is not None:
            terms.append(self.explicit(embedded))
        logits = terms[0]
        for term in terms[1:]:
            logits = logits + term
        return logits
