"""Small named blocks that every CTR model here is composed of.

Shapes: B = batch, F = fields, D = embedding dimension, L = bag length. A ``ModelBatch`` holds the
encoder's arrays grouped by role (``model.encoder.InputRole``), which keeps every model to one embedding
lookup per role instead of one per field.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.encoder import InputLayout, InputRole


class ModelBatch(NamedTuple):
    """Encoded inputs grouped by role.

    Attributes:
        idx: int64 [B, Fi], index fields in layout order (0 = missing, 1 = OOV).
        val: float32 [B, Fv], continuous fields in layout order.
        bags: one int64 [B, L] per bag field, 0 = padding.
    """

    idx: Tensor
    val: Tensor
    bags: tuple[Tensor, ...]


class FieldEmbedding(nn.Module):
    """Embeds every field into [B, F, D]: fields ordered index, then value, then bag fields.

    One table holds all fields' rows (per-field offsets), so a batch costs one lookup per role.
    Value fields own one row each, scaled by the value; bags are mean-pooled over their non-padding
    entries, and an empty bag uses the field's "missing" row.
    """

    index_offsets: Tensor
    value_rows: Tensor

    def __init__(self, layout: InputLayout, dim: int, init_std: float = 1e-4) -> None:
        super().__init__()
        index = layout.of_role(InputRole.INDEX)
        values = layout.of_role(InputRole.VALUE)
        bags = layout.of_role(InputRole.BAG)
        sizes = [f.cardinality for f in index] + [1] * len(values) + [f.cardinality for f in bags]
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        self.num_fields = len(sizes)
        self.dim = dim
        self.table = nn.Embedding(starts[-1], dim)
        nn.init.normal_(self.table.weight, std=init_std)
        n_index, n_values = len(index), len(values)
        self.register_buffer("index_offsets", torch.tensor(starts[:n_index], dtype=torch.int64))
        self.register_buffer(
            "value_rows", torch.tensor(starts[n_index : n_index + n_values], dtype=torch.int64)
        )
        self.bag_offsets = list(starts[n_index + n_values : -1])

    def forward(self, batch: ModelBatch) -> Tensor:
        """[B, F, D] embeddings of all fields."""
        parts: list[Tensor] = []
        if batch.idx.shape[1] > 0:
            parts.append(self.table(batch.idx + self.index_offsets))
        if batch.val.shape[1] > 0:
            rows = self.table.weight[self.value_rows]  # [Fv, D]
            parts.append(batch.val.unsqueeze(-1) * rows)
        for bag, offset in zip(batch.bags, self.bag_offsets, strict=True):
            parts.append(self._pool(bag, offset).unsqueeze(1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _pool(self, bag: Tensor, offset: int) -> Tensor:
        """[B, D] mean of the non-padding entries' embeddings; the missing row for an empty bag."""
        embedded = self.table(bag + offset)  # [B, L, D]
        mask = (bag > 0).unsqueeze(-1).to(embedded.dtype)  # [B, L, 1]
        count = mask.sum(dim=1)  # [B, 1]
        pooled = (embedded * mask).sum(dim=1) / count.clamp(min=1.0)
        return torch.where(count > 0, pooled, embedded[:, 0])


class FirstOrder(nn.Module):
    """The linear part: bias + sum over fields of a learned weight per value -> [B]."""

    def __init__(self, layout: InputLayout) -> None:
        super().__init__()
        self.weights = FieldEmbedding(layout, 1, init_std=0.0)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch: ModelBatch) -> Tensor:
        weights: Tensor = self.weights(batch)
        return weights.sum(dim=(1, 2)) + self.bias


class FactorizationMachine(nn.Module):
    """FM's second-order term: sum over field pairs i < j of <e_i, e_j>, computed in O(F D).

    Uses 0.5 * ((sum_i e_i)^2 - sum_i e_i^2) summed over D. Input [B, F, D] -> output [B].
    """

    def forward(self, embedded: Tensor) -> Tensor:
        square_of_sum = embedded.sum(dim=1).pow(2)
        sum_of_squares = embedded.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """Fully connected layers [B, in] -> [B] (or [B, out_dim] when ``out_dim`` > 1).

    Each hidden layer: Linear, optional BatchNorm1d, activation, Dropout.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: tuple[int, ...],
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        out_dim: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for units in hidden:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, out_dim))
        self.layers = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.layers(x)
        return out.squeeze(-1) if self.out_dim == 1 else out


class InnerProduct(nn.Module):
    """Pairwise inner products <e_i, e_j> for i < j: [B, F, D] -> [B, F(F-1)/2]."""

    rows: Tensor
    cols: Tensor

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.num_pairs = rows.numel()

    def forward(self, embedded: Tensor) -> Tensor:
        return (embedded[:, self.rows] * embedded[:, self.cols]).sum(dim=-1)


class OuterProduct(nn.Module):
    """PNN's outer-product signal with the sum-pooling trick: p = f f^T, f = sum_i e_i, flattened.

    [B, F, D] -> [B, D*D]. The next linear layer applies the paper's D1 learned D x D kernels
    (<W_k, p> for k = 1..D1), so kernels and the first hidden layer are one matrix multiplication.
    """

    def forward(self, embedded: Tensor) -> Tensor:
        pooled = embedded.sum(dim=1)  # [B, D]
        return (pooled.unsqueeze(2) * pooled.unsqueeze(1)).flatten(start_dim=1)
