"""DeepFM-D (Guo et al., 2017): an FM component and a deep component sharing one embedding."""

from __future__ import annotations

from torch import Tensor, nn

from model.encoder import InputLayout
from model.nets.blocks import MLP, FactorizationMachine, FieldEmbedding, FirstOrder, ModelBatch
from model.nets.params import DeepParams


class DeepFM(nn.Module):
    """logit = y_FM + y_DNN, where y_FM = first order + FM pairs and y_DNN = MLP(concat(e_1..e_F)).

    Both components read the same field embeddings [B, F, D], trained end to end.
    """

    def __init__(self, layout: InputLayout, params: DeepParams) -> None:
        super().__init__()
        self.params = params
        self.linear = FirstOrder(layout)
        self.embedding = FieldEmbedding(layout, params.embedding_dim)
        self.fm = FactorizationMachine()
        self.dnn = MLP(
            self.embedding.num_fields * params.embedding_dim,
            params.hidden_units,
            activation=params.activation,
            dropout=params.dropout,
            batch_norm=params.batch_norm,
        )

    def forward(self, batch: ModelBatch) -> Tensor:
        """Logits [B]."""
        embedded = self.embedding(batch)  # [B, F, D]
        y_fm = self.linear(batch) + self.fm(embedded)
        y_dnn = self.dnn(embedded.flatten(start_dim=1))
        out: Tensor = y_fm + y_dnn
        return out
