"""Which ONNX Runtime execution provider a bundle's session gets for each ``ort_device`` setting."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from model.bundle import BundleError
from service.rank.registry import LoadOptions, make_session

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def onnx_path(models_dir: Path) -> Path:
    return models_dir / "lr" / "model.onnx"


def test_cpu_is_always_cpu(models_dir: Path) -> None:
    session = make_session(onnx_path(models_dir), LoadOptions("cpu", 1, 1))
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_auto_takes_cuda_exactly_when_onnxruntime_offers_it(models_dir: Path) -> None:
    session = make_session(onnx_path(models_dir), LoadOptions("auto", 1, 1))
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if HAS_CUDA else ["CPUExecutionProvider"]
    assert session.get_providers() == expected


@pytest.mark.skipif(HAS_CUDA, reason="onnxruntime here has the CUDA provider")
def test_asking_for_cuda_without_it_is_a_clear_error(models_dir: Path) -> None:
    with pytest.raises(BundleError, match="CUDAExecutionProvider"):
        make_session(onnx_path(models_dir), LoadOptions("cuda", 1, 1))
