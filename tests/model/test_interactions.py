"""The explicit-interaction blocks (CIN, self-attention, cross network) against brute-force loops.

Each reference recomputes a block from its own weights with plain loops over rows, fields, maps and
heads, in float64, following the paper's formula rather than the block's vectorized form.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from model.encoder import Encoded, FeatureEncoder
from model.export import export_onnx, model_batch, parity_check
from model.nets import build_model
from model.nets.composed import ComposedModel
from model.nets.interactions import CompressedInteraction, CrossNetwork, SelfAttention


def cin_reference(cin: CompressedInteraction, x0: Tensor) -> Tensor:
    """X^k_h = sum_{i,j} W^{k,h}_{i,j} (X^{k-1}_i * X^0_j), one row, map and pair at a time."""
    rows, fields, _ = x0.shape
    out = []
    for b in range(rows):
        hidden, pooled = x0[b], []
        for layer, keep, passed in zip(cin.layers, cin.kept, cin.passed_from, strict=True):
            assert isinstance(layer, torch.nn.Linear)
            weight = layer.weight.view(layer.out_features, hidden.shape[0], fields)  # [H_k, H, F]
            maps = torch.zeros(weight.shape[0], x0.shape[2], dtype=x0.dtype)
            for h in range(weight.shape[0]):
                for i in range(hidden.shape[0]):
                    for j in range(fields):
                        maps[h] += weight[h, i, j] * hidden[i] * x0[b, j]
            pooled += [maps[h].sum() for h in range(keep)]
            hidden = maps[passed:]
        out.append(torch.stack(pooled))
    return torch.stack(out)


def attention_reference(layer: SelfAttention, x: Tensor) -> Tensor:
    """Per head and field i: softmax_j(<q_i, k_j> / sqrt(d)) weighted sum of v_j, + residual, ReLU."""
    rows, fields, _ = x.shape
    heads, dim = layer.heads, layer.dim
    out = torch.zeros(rows, fields, heads * dim, dtype=x.dtype)
    for b in range(rows):
        q, k, v = (p.weight @ x[b].T for p in (layer.query, layer.key, layer.value))  # [H*d, F]
        for h in range(heads):
            part = slice(h * dim, (h + 1) * dim)
            for i in range(fields):
                scores = [float(q[part, i] @ k[part, j]) / math.sqrt(dim) for j in range(fields)]
                weights = [math.exp(s - max(scores)) for s in scores]
                total = sum(weights)
                out[b, i, part] = sum(w / total * v[part, j] for j, w in enumerate(weights))
        if layer.residual is not None:
            out[b] += (layer.residual.weight @ x[b].T).T
    return torch.relu(out)


def cross_reference(net: CrossNetwork, x0: Tensor) -> Tensor:
    """x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, one row at a time."""
    out = []
    for row in x0:
        x = row
        for layer in net.layers:
            x = row * (layer.weight @ x + layer.bias) + x
        out.append(x)
    return torch.stack(out)


@pytest.mark.parametrize(("units", "split_half"), [((4, 6, 3), True), ((3, 2), False)])
def test_cin_equals_brute_force(units: tuple[int, ...], split_half: bool) -> None:
    torch.manual_seed(0)
    cin = CompressedInteraction(5, units, split_half=split_half).double()
    x0 = torch.randn(3, 5, 4, dtype=torch.float64)
    expected_width = sum(u // 2 for u in units[:-1]) + units[-1] if split_half else sum(units)
    assert cin.output_dim == expected_width
    with torch.no_grad():
        torch.testing.assert_close(cin(x0), cin_reference(cin, x0))


@pytest.mark.parametrize("residual", [True, False])
def test_self_attention_equals_brute_force(residual: bool) -> None:
    torch.manual_seed(0)
    layer = SelfAttention(4, heads=3, dim=2, residual=residual).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), attention_reference(layer, x))


def test_cross_network_equals_brute_force() -> None:
    torch.manual_seed(0)
    net = CrossNetwork(6, layers=3).double()
    x0 = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x0), cross_reference(net, x0))


NEW_MODELS: dict[str, dict[str, Any]] = {
    "xdeepfm": {"hidden_units": [16], "cin_layer_units": [8, 6]},
    "autoint": {"attention_layers": 2, "attention_heads": 2, "attention_dim": 4},
    "autoint_plus": {"attention_layers": 1, "hidden_units": [16]},
    "dcnv2": {"hidden_units": [16], "cross_layers": 2},
}


@pytest.mark.parametrize("case", list(NEW_MODELS))
def test_new_models_export_with_parity(
    case: str, mixed_encoder: FeatureEncoder, mixed_rows: Encoded, tmp_path: pytest.TempPathFactory
) -> None:
    torch.manual_seed(0)
    model = build_model(case.removesuffix("_plus"), mixed_encoder.layout, NEW_MODELS[case]).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    assert isinstance(model, ComposedModel)
    assert (model.deep is not None) == ("hidden_units" in NEW_MODELS[case])  # AutoInt+ only with a DNN
    path = tmp_path / "model.onnx"  # type: ignore[operator]
    export_onnx(model, mixed_encoder.layout, mixed_rows, path)
    report = parity_check(model, mixed_encoder.layout, mixed_rows, path)
    assert report.passed and report.rows == 512, report
    logits = model(model_batch(mixed_rows, mixed_encoder.layout))
    assert logits.std() > 1e-3  # distinct scores were compared
