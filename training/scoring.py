"""Scoring a model: logits, CTRs and AUC / logloss / calibration, in memory or streamed over ranks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from model.nets.blocks import ModelBatch
from training.data import EncodedData, batches, maybe_prefetch
from training.distributed import DistContext, gather_concat
from training.metrics import evaluate_predictions
from training.prepared.loader import StreamEval

EvalData = EncodedData | StreamEval


def predict_logits(
    model: nn.Module, data: EncodedData, batch_size: int, device: torch.device | None = None
) -> Tensor:
    """Logit of every row (on the CPU), in eval mode and fp32."""
    model.eval()
    device = device or next(model.parameters()).device
    logits = _Filling(len(data))
    with torch.no_grad():
        for batch, labels in batches(data, batch_size, shuffle=False):
            moved, _ = _to(batch, labels, device)
            logits.add(model(moved))
    return logits.done()


def predict(
    model: nn.Module, data: EncodedData, batch_size: int, device: torch.device | None = None
) -> npt.NDArray[np.float32]:
    """CTR of every row, in eval mode and fp32."""
    return torch.sigmoid(predict_logits(model, data, batch_size, device)).numpy()


def logits_and_labels(
    model: nn.Module, data: EvalData, batch_size: int, device: torch.device | None = None,
    context: DistContext | None = None, prefetch: bool = False,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Logits and labels of every row (CPU). A stream is scored by every rank over its own rows and
    gathered, so the figures are exact over all rows and identical on every rank."""
    if isinstance(data, EncodedData):
        return predict_logits(model, data, batch_size, device), data.labels
    model.eval()
    device = device or next(model.parameters()).device
    rows = data.local_rows()
    logits, labels = _Filling(rows), _Filling(rows)
    with torch.no_grad():
        for part in maybe_prefetch(data.batches(batch_size), prefetch):
            moved, _ = _to(ModelBatch(part.idx, part.val, part.bags), part.labels, device)
            logits.add(model(moved))
            labels.add(part.labels)
    return gather_concat(logits.done(), context), gather_concat(labels.done(), context)


class _Filling:
    """A float32 CPU vector of a known length, filled batch by batch.

    Why not a list of batch outputs joined at the end: every kept output is a small block between the
    large ones a forward pass frees, and those blocks stop the allocator from handing the freed memory
    back, so over a split of millions of rows the process grew by gigabytes. One array, allocated once,
    keeps the peak at the model's working set plus four bytes a row.
    """

    def __init__(self, rows: int) -> None:
        self.values, self.filled = torch.empty(rows, dtype=torch.float32), 0

    def add(self, part: Tensor) -> None:
        end = self.filled + part.shape[0]
        if end > self.values.shape[0]:
            raise RuntimeError(f"more rows scored than the {self.values.shape[0]} expected")
        self.values[self.filled : end] = part.detach().float().cpu()
        self.filled = end

    def done(self) -> Tensor:
        if self.filled != self.values.shape[0]:
            raise RuntimeError(f"{self.filled} rows scored, {self.values.shape[0]} expected")
        return self.values


def evaluate(
    model: nn.Module, data: EvalData, batch_size: int, device: torch.device | None = None,
    context: DistContext | None = None, prefetch: bool = False,
) -> dict[str, float]:  # fmt: skip
    """AUC, logloss and calibration of ``model`` on ``data`` (in memory, or a stream split over ranks)."""
    logits, labels = logits_and_labels(model, data, batch_size, device, context, prefetch)
    return evaluate_predictions(labels.numpy(), torch.sigmoid(logits).numpy())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to(batch: ModelBatch, labels: Tensor, device: torch.device) -> tuple[ModelBatch, Tensor]:
    if device.type == "cpu":
        return batch, labels
    moved = ModelBatch(
        batch.idx.to(device, non_blocking=True),
        batch.val.to(device, non_blocking=True),
        tuple(b.to(device, non_blocking=True) for b in batch.bags),
    )
    return moved, labels.to(device, non_blocking=True)
