"""Platt scaling: logit' = scale * logit + shift, fitted on held-out data and exported with the model.

Dropout before batch normalization, L2 and early stopping all shift a deep model's mean prediction
away from the observed CTR; ranking by CTR does not care, but ranking by CTR x bid and every report
of predicted CTR do. Two parameters fitted on the validation split fix the average without changing
the order of any two candidates (the map is increasing), so AUC is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from model.nets.blocks import ModelBatch


class PlattScaled(nn.Module):
    """Wraps a model: its logits [B] mapped by ``scale * logit + shift``."""

    scale: Tensor
    shift: Tensor

    def __init__(self, model: nn.Module, scale: float, shift: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))

    def forward(self, batch: ModelBatch) -> Tensor:
        logits: Tensor = self.model(batch)
        return logits * self.scale + self.shift


# rows per float64 pass: the fit holds the logits and labels, never float64 copies of them (at 2^18 rows the
# chunk's temporaries stay about 60 MiB whatever the split; at 2^20 freed chunks fragment the heap to 200+)
CHUNK = 1 << 18


def _chunks(logits: Tensor, labels: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    for begin in range(0, int(logits.shape[0]), CHUNK):
        yield logits[begin : begin + CHUNK].double(), labels[begin : begin + CHUNK].double()


def _platt_loss(logits: Tensor, labels: Tensor, params: Tensor) -> float:
    """Mean logloss of sigmoid(scale * logit + shift), computed stably from the logits, chunk by chunk."""
    total = 0.0
    for x, y in _chunks(logits, labels):
        z = params[0] * x + params[1]
        total += float((torch.nn.functional.softplus(z) - y * z).sum())
    return total / max(int(logits.shape[0]), 1)


def _newton_terms(logits: Tensor, labels: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """The logloss's gradient [2] and Hessian [2, 2] in (scale, shift), summed over the rows in chunks."""
    gradient = torch.zeros(2, dtype=torch.float64)
    hessian = torch.zeros(2, 2, dtype=torch.float64)
    for x, y in _chunks(logits, labels):
        p = torch.sigmoid(params[0] * x + params[1])
        residual, weight = p - y, p * (1 - p)
        gradient += torch.stack([(residual * x).sum(), residual.sum()])
        cross = (weight * x).sum()
        squares, weights = (weight * x * x).sum(), weight.sum()
        hessian += torch.stack([torch.stack([squares, cross]), torch.stack([cross, weights])])
    return gradient, hessian


def fit_platt(logits: Tensor, labels: Tensor, iterations: int = 50) -> tuple[float, float]:
    """(scale, shift) minimizing the logloss of sigmoid(scale * logit + shift), by Newton's method.

    Each Newton step is halved until the loss does not increase: a full step from the identity
    diverges when the logits are large (an overconfident model saturates the sigmoid, the Hessian
    nearly vanishes and the step overshoots by orders of magnitude). Falls back to the identity when
    the data hold a single class. The sums run over chunks of ``CHUNK`` rows in float64, so a split of
    millions of rows costs the fit a few chunk-sized temporaries, not float64 copies of the split.
    """
    logits, labels = logits.reshape(-1), labels.reshape(-1)
    if labels.min() == labels.max():
        return 1.0, 0.0
    params = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = _platt_loss(logits, labels, params)
    ridge = 1e-9 * torch.eye(2, dtype=torch.float64)
    for _ in range(iterations):
        gradient, hessian = _newton_terms(logits, labels, params)
        step = torch.linalg.solve(hessian + ridge, gradient)
        for _ in range(60):  # backtracking: halve until the loss does not increase
            candidate = params - step
            candidate_loss = _platt_loss(logits, labels, candidate)
            if candidate_loss <= loss:
                break
            step = step / 2
        else:
            break  # no step decreases the loss: at the optimum up to rounding
        params, loss = candidate, candidate_loss
        if step.abs().max() < 1e-10:
            break
    return float(params[0]), float(params[1])
