"""ONNX export: parity with PyTorch for every registered model, input names, dynamic batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model.encoder import Encoded, FeatureEncoder
from model.export import export_onnx, onnx_ctr, parity_check, torch_ctr
from model.nets import REGISTRY, build_model

# AutoInt's three attention layers shrink small weights' signal: it needs a larger nudge to score apart
NOISE = {"autoint": 0.2}


def _perturbed(name: str, encoder: FeatureEncoder) -> torch.nn.Module:
    """A model with non-trivial weights (fresh inits are near zero and would hide differences)."""
    torch.manual_seed(3)
    model = build_model(name, encoder.layout)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(NOISE.get(name, 0.05) * torch.randn_like(parameter))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_onnx_matches_torch(
    name: str, mixed_encoder: FeatureEncoder, mixed_rows: Encoded, tmp_path: Path
) -> None:
    model = _perturbed(name, mixed_encoder)
    path = tmp_path / "model.onnx"
    export_onnx(model, mixed_encoder.layout, mixed_rows, path)
    report = parity_check(model, mixed_encoder.layout, mixed_rows, path)
    assert report.passed and report.rows == 512 and report.max_abs_diff <= 1e-5
    ctr = torch_ctr(model, mixed_encoder.layout, mixed_rows)
    assert ctr.std() > 1e-3  # the check compared distinct predictions, not constants


def test_graph_inputs_are_the_fields_and_batch_is_dynamic(
    mixed_encoder: FeatureEncoder, mixed_rows: Encoded, tmp_path: Path
) -> None:
    model = _perturbed("deepfm", mixed_encoder)
    path = tmp_path / "model.onnx"
    export_onnx(model, mixed_encoder.layout, mixed_rows, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.type for i in session.get_inputs()}
    assert list(inputs) == [f.name for f in mixed_encoder.layout.fields]
    assert inputs["price"] == "tensor(float)" and inputs["user"] == "tensor(int64)"
    assert [o.name for o in session.get_outputs()] == ["ctr"]
    for rows in (1, 7, 300):
        part = {k: v[:rows] for k, v in mixed_rows.items()}
        np.testing.assert_allclose(
            onnx_ctr(path, part), torch_ctr(model, mixed_encoder.layout, part), atol=1e-5
        )


def test_parity_check_fails_when_the_graph_differs(
    mixed_encoder: FeatureEncoder, mixed_rows: Encoded, tmp_path: Path
) -> None:
    model = _perturbed("fm", mixed_encoder)
    path = tmp_path / "model.onnx"
    export_onnx(model, mixed_encoder.layout, mixed_rows, path)
    with torch.no_grad():
        bias = model.get_parameter("linear.bias")
        bias.add_(0.5)  # the torch model moves on; the exported graph does not
    report = parity_check(model, mixed_encoder.layout, mixed_rows, path)
    assert not report.passed and report.max_abs_diff > 1e-2


def test_calibrated_model_exports_with_parity(
    mixed_encoder: FeatureEncoder, mixed_rows: Encoded, tmp_path: Path
) -> None:
    from model.nets.calibration import PlattScaled

    base = _perturbed("deepfm", mixed_encoder)
    model = PlattScaled(base, 0.7, -0.3).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, mixed_encoder.layout, mixed_rows, path)
    assert parity_check(model, mixed_encoder.layout, mixed_rows, path).passed
    raw = torch_ctr(base, mixed_encoder.layout, mixed_rows).astype(np.float64)
    expected = 1 / (1 + np.exp(-(0.7 * np.log(raw / (1 - raw)) - 0.3)))
    np.testing.assert_allclose(onnx_ctr(path, mixed_rows), expected, atol=1e-5)
