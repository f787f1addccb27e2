"""Factorization machine (Rendle, 2010): first order plus all pairwise latent-factor interactions."""

from __future__ import annotations

from torch import Tensor, nn

from model.encoder import InputLayout
from model.nets.blocks import FactorizationMachine, FieldEmbedding, FirstOrder, ModelBatch
from model.nets.params import FMParams


class FM(nn.Module):
    """logit = bias + sum_i w_i + sum_{i<j} <v_i, v_j>."""

    def __init__(self, layout: InputLayout, params: FMParams) -> None:
        super().__init__()
        self.params = params
        self.linear = FirstOrder(layout)
        self.embedding = FieldEmbedding(layout, params.embedding_dim)
        self.fm = FactorizationMachine()

    def forward(self, batch: ModelBatch) -> Tensor:
        """Logits [B]."""
        out: Tensor = self.linear(batch) + self.fm(self.embedding(batch))
        return out
