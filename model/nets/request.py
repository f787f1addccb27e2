"""Request-shaped scoring: user and context work done once per request, item work once per app.

A /rank request scores N candidates for one user in one context, so every term of a model that reads
only user and context fields (``FieldSpec.source``) is the same for all N. For the models built of
first order, FM and an MLP over the embeddings (with PNN products) the logit splits exactly:

* first order: sum_f w_f = sum_{f in UC} w_f + sum_{f in I} w_f;
* FM: 0.5 (|S_uc + S_i|^2 - Q_uc - Q_i) = fm(UC) + fm(I) + <S_uc, S_i> (S = sum of embeddings,
  Q = sum of their squared norms);
* the MLP's first layer: W1 [e_uc; e_i] + b = (W1_uc e_uc + b) + W1_i e_i, the inner products of PNN
  split into pairs within UC, within I and across (<e_a, e_b> = the item's embeddings times a matrix
  built from the user's), the outer product of f = S_uc + S_i into S_uc S_uc^T, S_i S_i^T and the
  cross terms (again the item's S_i times a matrix built from S_uc).

``ItemTower`` maps the item fields of N candidates to their *item part* ``[N, P]``: the item's share
of the first hidden layer (H), the item vectors the cross terms need (X), the item's first-order + FM
sum (1) and its FM embedding sum (D). It depends on the app only, so the service caches it per app.
``RequestHead`` takes the user and context fields once (``[1, ...]``) and the item part ``[N, P]``
and finishes: adds the user's share, the cross terms, runs the remaining layers and the sigmoid.
Both are built from the trained modules' own weights (shared, not copied). Explicit-interaction
models (CIN, attention, cross network) mix fields in every layer and keep the plain graph.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.encoder import InputLayout, InputRole, group_by_role
from model.nets.blocks import FieldEmbedding
from model.nets.calibration import PlattScaled
from model.nets.composed import ComposedModel


def embedding_positions(layout: InputLayout) -> dict[str, int]:
    """Each field's position in ``FieldEmbedding``'s output: index, then value, then bag fields."""
    ordered = [f.name for role in InputRole for f in layout.of_role(role)]
    return {name: i for i, name in enumerate(ordered)}


class SubsetEmbedding(nn.Module):
    """A ``FieldEmbedding`` restricted to some fields: their inputs (layout order) -> [B, S, D].

    Fields come out in embedding order (index, value, bag), the table is the trained one.
    """

    index_offsets: Tensor
    value_rows: Tensor

    def __init__(self, full: FieldEmbedding, layout: InputLayout, keep: Collection[str]) -> None:
        super().__init__()
        self.table = full.table
        index = [i for i, f in enumerate(layout.of_role(InputRole.INDEX)) if f.name in keep]
        values = [i for i, f in enumerate(layout.of_role(InputRole.VALUE)) if f.name in keep]
        bags = [i for i, f in enumerate(layout.of_role(InputRole.BAG)) if f.name in keep]
        self.register_buffer("index_offsets", full.index_offsets[index].clone())
        self.register_buffer("value_rows", full.value_rows[values].clone())
        self.bag_offsets = [full.bag_offsets[i] for i in bags]
        self.num_fields = len(index) + len(values) + len(bags)

    def forward(self, index: list[Tensor], values: list[Tensor], bags: list[Tensor]) -> Tensor:
        parts: list[Tensor] = []
        if index:
            parts.append(self.table(torch.stack(index, dim=1) + self.index_offsets))
        if values:
            parts.append(torch.stack(values, dim=1).unsqueeze(-1) * self.table.weight[self.value_rows])
        for bag, offset in zip(bags, self.bag_offsets, strict=True):
            embedded = self.table(bag + offset)  # [B, L, D]
            mask = (bag > 0).unsqueeze(-1).to(embedded.dtype)
            count = mask.sum(dim=1)
            pooled = (embedded * mask).sum(dim=1) / count.clamp(min=1.0)
            parts.append(torch.where(count > 0, pooled, embedded[:, 0]).unsqueeze(1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


@dataclass(frozen=True)
class Sides:
    """Which fields are the request's (user + context) and which the candidate's (item)."""

    layout: InputLayout
    shared: frozenset[str]

    def names(self, shared: bool) -> list[str]:
        """The fields of one side, in layout order (the graph's input order)."""
        return [f.name for f in self.layout.fields if (f.name in self.shared) == shared]

    def positions(self, shared: bool) -> list[int]:
        """The embedding positions of one side's fields, ascending (``SubsetEmbedding``'s order)."""
        where = embedding_positions(self.layout)
        return sorted(where[f.name] for f in self.layout.fields if (f.name in self.shared) == shared)


def unwrap(model: nn.Module) -> tuple[nn.Module, float, float]:
    """The model under Platt scaling, with (scale, shift); (1, 0) when it is not calibrated."""
    if isinstance(model, PlattScaled):
        return model.model, float(model.scale), float(model.shift)
    return model, 1.0, 0.0


def why_not_splittable(model: nn.Module, sides: Sides) -> str | None:
    """None when ``model`` has an exact request-shaped form; else the reason it keeps the plain graph."""
    inner, _, _ = unwrap(model)
    if not isinstance(inner, ComposedModel):
        return f"{type(inner).__name__} is not a composed model"
    if inner.explicit is not None:
        return f"its {inner.recipe.explicit} component mixes user and item fields in every layer"
    if not sides.names(True) or not sides.names(False):
        return "the schema needs both user/context fields and item fields"
    return None


def _first_batch_norm(layers: nn.Sequential) -> nn.BatchNorm1d | None:
    """The batch norm right after the first linear layer, if any."""
    follower = layers[1] if len(layers) > 1 else None
    return follower if isinstance(follower, nn.BatchNorm1d) else None


def _fold_batch_norm(first: nn.Linear, layers: nn.Sequential) -> tuple[Tensor, Tensor]:
    """The first layer's (weight [H, in], bias [H]) with the batch norm after it (eval mode) folded in.

    BN(W x + b) = a * (W x + b) + c with a = gamma / sqrt(var + eps), c = beta - mean * a: an affine
    map per unit, so folding it keeps the split exact and spares the request graph one op over [N, H].
    """
    weight, bias = first.weight.detach(), first.bias.detach()
    norm = _first_batch_norm(layers)
    if norm is None:
        return weight, bias
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach()
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach()
    return weight * scale.unsqueeze(1), bias * scale + shift


class _Parts(nn.Module):
    """What ItemTower and RequestHead share: the model's blocks restricted to one side's fields."""

    w_flat: Tensor
    w_inner: Tensor
    w_inner_cross: Tensor
    w_outer: Tensor
    w_outer_cross: Tensor
    pair_a: Tensor
    pair_b: Tensor
    bias: Tensor

    def __init__(self, model: nn.Module, sides: Sides, shared: bool) -> None:
        super().__init__()
        inner, _, _ = unwrap(model)
        assert isinstance(inner, ComposedModel) and why_not_splittable(model, sides) is None
        layout = sides.layout
        keep = set(sides.names(shared))
        self.roles = [f.role for f in layout.fields if f.name in keep]
        self.linear = SubsetEmbedding(inner.linear.weights, layout, keep) if inner.linear else None
        self.fm = SubsetEmbedding(inner.embedding, layout, keep) if inner.fm and inner.embedding else None
        deep_table = inner.deep_embedding or inner.embedding
        self.deep = SubsetEmbedding(deep_table, layout, keep) if inner.deep and deep_table else None
        self.dim = deep_table.dim if deep_table is not None else 0
        self.hidden = 0
        self.product = inner.recipe.deep
        if inner.deep is not None:
            first = inner.deep.mlp.layers[0]
            assert isinstance(first, nn.Linear)
            self.hidden = first.out_features
            weight, bias = _fold_batch_norm(first, inner.deep.mlp.layers)
            self._split_first_layer(weight, bias, sides, shared, layout.num_fields)

    def _split_first_layer(
        self, weight: Tensor, bias: Tensor, sides: Sides, shared: bool, num_fields: int
    ) -> None:
        """This side's columns of the first layer: flat embeddings, products within the side."""
        dim = self.dim
        mine = sides.positions(shared)
        flat = [p * dim + d for p in mine for d in range(dim)]
        self.register_buffer("w_flat", weight[:, flat].T.contiguous())  # [S*D, H]
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        pair = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(rows, cols, strict=True))}
        inner_from = num_fields * dim
        inner_pairs = len(pair) if self.product in ("inner", "both") else 0
        self.inner_pairs: list[tuple[int, int]] = []
        if inner_pairs:
            local = [(i, j) for i in range(len(mine)) for j in range(i + 1, len(mine))]
            columns = [inner_from + pair[(mine[i], mine[j])] for i, j in local]
            self.register_buffer("w_inner", weight[:, columns].T.contiguous())  # [pairs, H]
            self.inner_pairs = local
            self.register_buffer("pair_a", torch.tensor([i for i, _ in local], dtype=torch.int64))
            self.register_buffer("pair_b", torch.tensor([j for _, j in local], dtype=torch.int64))
        if inner_pairs and shared:
            other = sides.positions(not shared)
            # W_in for every cross pair (a: user/context field, b: item field): [I, H, UC]
            cross = [[inner_from + pair[(min(a, b), max(a, b))] for a in mine] for b in other]
            self.register_buffer(
                "w_inner_cross", weight[:, torch.tensor(cross)].permute(1, 0, 2).contiguous()
            )
        if self.product in ("outer", "both"):
            outer = weight[:, inner_from + inner_pairs :].reshape(-1, dim, dim)  # [H, D, D]
            self.register_buffer("w_outer", outer.flatten(1).T.contiguous())  # [D*D, H]
        if self.product in ("outer", "both") and shared:
            # sum_d (W[h, d, e] + W[h, e, d]) s_uc[d]: the cross term's matrix, as [e, h, d]
            self.register_buffer(
                "w_outer_cross", (outer + outer.transpose(1, 2)).permute(2, 0, 1).contiguous()
            )
        self.register_buffer("bias", bias.clone() if shared else torch.zeros(self.hidden))

    def side_terms(
        self, inputs: tuple[Tensor, ...]
    ) -> tuple[Tensor | None, Tensor | None, Tensor, Tensor | None]:
        """This side's first-layer share [B, H], deep embeddings [B, S, D], shallow sum [B], FM sum [B, D]."""
        index, values, bags = group_by_role(list(inputs), self.roles)
        shallow = torch.zeros((), dtype=torch.float32)
        fm_sum = hidden = deep_e = None
        if self.linear is not None:
            shallow = shallow + self.linear(index, values, bags).sum(dim=(1, 2))
        if self.fm is not None:
            fm_e = self.fm(index, values, bags)
            fm_sum = fm_e.sum(dim=1)
            shallow = shallow + 0.5 * (fm_sum.pow(2) - fm_e.pow(2).sum(dim=1)).sum(dim=1)
        if self.deep is not None:
            deep_e = self.deep(index, values, bags)
            hidden = deep_e.flatten(1) @ self.w_flat + self.bias
            if self.inner_pairs:
                a, b = self.pair_a, self.pair_b
                hidden = hidden + (deep_e[:, a] * deep_e[:, b]).sum(dim=-1) @ self.w_inner
            if self.product in ("outer", "both"):
                pooled = deep_e.sum(dim=1)
                hidden = hidden + (pooled.unsqueeze(2) * pooled.unsqueeze(1)).flatten(1) @ self.w_outer
        return hidden, deep_e, shallow.expand(inputs[0].shape[0]), fm_sum


class ItemTower(_Parts):
    """Item fields of N candidates (layout order) -> item part [N, P] = [hidden H | cross X | 1 | FM D]."""

    def __init__(self, model: nn.Module, sides: Sides) -> None:
        super().__init__(model, sides, shared=False)

    def forward(self, *inputs: Tensor) -> Tensor:
        hidden, deep_e, shallow, fm_sum = self.side_terms(inputs)
        parts = [] if hidden is None else [hidden]
        if deep_e is not None and self.product in ("inner", "both"):
            parts.append(deep_e.flatten(1))
        if deep_e is not None and self.product in ("outer", "both"):
            parts.append(deep_e.sum(dim=1))
        parts.append(shallow.unsqueeze(1))
        if fm_sum is not None:
            parts.append(fm_sum)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class RequestHead(_Parts):
    """User and context fields once ([1, ...], layout order) + item part [N, P] -> CTR [N]."""

    scale: Tensor
    shift: Tensor

    def __init__(self, model: nn.Module, sides: Sides) -> None:
        super().__init__(model, sides, shared=True)
        inner, scale, shift = unwrap(model)
        assert isinstance(inner, ComposedModel)
        self.rest: nn.Module | None = None
        if inner.deep is not None:
            layers = inner.deep.mlp.layers
            self.rest = layers[2:] if _first_batch_norm(layers) is not None else layers[1:]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))
        self.item_fields = len(sides.names(False))
        self.bias_term = inner.linear.bias if inner.linear is not None else None

    def cross_width(self) -> int:
        """Columns X of the item part that the cross terms read."""
        width = self.item_fields * self.dim if self.product in ("inner", "both") else 0
        return width + (self.dim if self.product in ("outer", "both") else 0)

    def forward(self, *inputs: Tensor) -> Tensor:
        *fields, item = inputs
        hidden_uc, deep_e, shallow_uc, fm_uc = self.side_terms(tuple(fields))  # batch 1
        h, x = self.hidden, self.cross_width()
        logit = item[:, h + x] + shallow_uc
        if self.bias_term is not None:
            logit = logit + self.bias_term
        if fm_uc is not None:
            logit = logit + item[:, h + x + 1 :] @ fm_uc[0]
        if self.rest is not None and hidden_uc is not None and deep_e is not None:
            pre = item[:, :h] + hidden_uc
            if x:
                pre = pre + item[:, h : h + x] @ self._cross_matrix(deep_e[0])
            deep: Tensor = self.rest(pre)
            logit = logit + deep.squeeze(-1)
        return torch.sigmoid(logit * self.scale + self.shift)

    def _cross_matrix(self, deep_uc: Tensor) -> Tensor:
        """[X, H]: what the item's cross vectors are multiplied by, from the user's embeddings [UC, D]."""
        parts: list[Tensor] = []
        if self.product in ("inner", "both"):
            # [I, H, UC] @ [UC, D] -> [I, H, D] -> rows (item field, d)
            per_field = self.w_inner_cross @ deep_uc
            parts.append(per_field.permute(0, 2, 1).reshape(-1, self.hidden))
        if self.product in ("outer", "both"):
            parts.append(self.w_outer_cross @ deep_uc.sum(dim=0))  # [D, H, D] @ [D] -> [D, H]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
