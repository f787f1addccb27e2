"""Explicit feature-interaction blocks of the DeepFM lineage: CIN, self-attention, the DCN-V2 cross.

Shapes: B = batch, F = fields, D = embedding dimension, H = feature maps (CIN) or heads (attention).
Each block has a brute-force reference in ``tests/model/test_interactions.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CompressedInteraction(nn.Module):
    """xDeepFM's Compressed Interaction Network: [B, F, D] -> [B, output_dim] (sum-pooled maps).

    Layer k computes H_k maps X^k_h = sum_{i, j} W^{k,h}_{i,j} (X^{k-1}_i * X^0_j) (elementwise over
    D, no bias or activation, as in the paper's formula). Every layer's maps are summed over D into the
    output and feed the next layer; with ``split_half`` every layer but the last sends only its first
    half of maps to the output and only the rest to the next layer.
    """

    def __init__(self, num_fields: int, layer_units: tuple[int, ...], *, split_half: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.kept: list[int] = []  # maps of each layer sent to the output
        self.passed_from: list[int] = []  # first map of each layer sent to the next layer
        width = num_fields
        for k, units in enumerate(layer_units):
            # a Linear over the flattened (map, field) pairs is the paper's W^{k,h} for every h at once
            self.layers.append(nn.Linear(width * num_fields, units, bias=False))
            split = split_half and k < len(layer_units) - 1
            self.kept.append(units // 2 if split else units)
            self.passed_from.append(units // 2 if split else 0)
            width = units - self.passed_from[-1]
        self.output_dim = sum(self.kept)

    def forward(self, embedded: Tensor) -> Tensor:
        """[B, F, D] -> [B, output_dim]."""
        hidden = embedded
        pooled: list[Tensor] = []
        for layer, keep, passed in zip(self.layers, self.kept, self.passed_from, strict=True):
            pairs = (hidden.unsqueeze(2) * embedded.unsqueeze(1)).flatten(1, 2)  # [B, H * F, D]
            assert isinstance(layer, nn.Linear)
            maps = layer.weight @ pairs  # [H_k, H * F] @ [B, H * F, D] -> [B, H_k, D], no transposed copies
            pooled.append(maps[:, :keep].sum(dim=2))
            hidden = maps[:, passed:]
        return torch.cat(pooled, dim=1)


class SelfAttention(nn.Module):
    """One AutoInt interacting layer: multi-head self-attention over fields, [B, F, in] -> [B, F, H*d].

    Per head: softmax(Q K^T / sqrt(d)) V with Q, K, V linear projections of the fields (the scaling
    keeps the softmax out of saturation as widths vary); heads are concatenated, a projected residual
    is added (``residual``) and a ReLU applied.
    """

    def __init__(self, in_dim: int, heads: int, dim: int, *, residual: bool = True) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        self.query = nn.Linear(in_dim, heads * dim, bias=False)
        self.key = nn.Linear(in_dim, heads * dim, bias=False)
        self.value = nn.Linear(in_dim, heads * dim, bias=False)
        self.residual = nn.Linear(in_dim, heads * dim, bias=False) if residual else None
        self.output_dim = heads * dim

    def _split(self, x: Tensor) -> Tensor:
        """[B, F, H*d] -> [B, H, F, d]."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.dim).transpose(1, 2)

    def forward(self, fields: Tensor) -> Tensor:
        """[B, F, in] -> [B, F, H*d]."""
        query, key, value = (self._split(p(fields)) for p in (self.query, self.key, self.value))
        scores = query @ key.transpose(-1, -2) / math.sqrt(self.dim)  # [B, H, F, F]
        attended = torch.softmax(scores, dim=-1) @ value  # [B, H, F, d]
        out = attended.transpose(1, 2).flatten(2)  # [B, F, H*d]
        if self.residual is not None:
            out = out + self.residual(fields)
        return torch.relu(out)


class CrossNetwork(nn.Module):
    """DCN-V2's full-rank cross layers: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, [B, W] -> [B, W]."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
