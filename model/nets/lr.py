"""Logistic regression: logit = bias + sum of one learned weight per field value."""

from __future__ import annotations

from torch import Tensor, nn

from model.encoder import InputLayout
from model.nets.blocks import FirstOrder, ModelBatch
from model.nets.params import LRParams


class LogisticRegression(nn.Module):
    """LR over the encoded fields (one-hot categorical values, scaled continuous values)."""

    def __init__(self, layout: InputLayout, params: LRParams) -> None:
        super().__init__()
        self.params = params
        self.linear = FirstOrder(layout)

    def forward(self, batch: ModelBatch) -> Tensor:
        """Logits [B]."""
        out: Tensor = self.linear(batch)
        return out
