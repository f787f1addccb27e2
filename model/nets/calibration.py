"""Platt scaling: logit' = scale * logit + shift, fitted on held-out data and exported with the model.

Dropout before batch normalization, L2 and early stopping all shift a deep model's mean prediction
away from the observed CTR; ranking by CTR does not care, but ranking by CTR x bid and every report
of predicted CTR do. Two parameters fitted on the validation split fix the average without changing
the order of any two candidates (the map is increasing), so AUC is unchanged.
"""

from __future__ import annotations

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


def _platt_loss(design: Tensor, y: Tensor, params: Tensor) -> Tensor:
    """Mean logloss of sigmoid(design @ params), computed stably from the logits."""
    z = design @ params
    return (torch.nn.functional.softplus(z) - y * z).mean()


def fit_platt(logits: Tensor, labels: Tensor, iterations: int = 50) -> tuple[float, float]:
    """(scale, shift) minimizing the logloss of sigmoid(scale * logit + shift), by Newton's method.

    Each Newton step is halved until the loss does not increase: a full step from the identity
    diverges when the logits are large (an overconfident model saturates the sigmoid, the Hessian
    nearly vanishes and the step overshoots by orders of magnitude). Falls back to the identity when
    the data hold a single class.
    """
    x = logits.double()
    y = labels.double()
    if y.min() == y.max():
        return 1.0, 0.0
    params = torch.tensor([1.0, 0.0], dtype=torch.float64)
    design = torch.stack([x, torch.ones_like(x)], dim=1)  # [N, 2]
    loss = _platt_loss(design, y, params)
    for _ in range(iterations):
        p = torch.sigmoid(design @ params)
        gradient = design.T @ (p - y)
        hessian = (design * (p * (1 - p)).unsqueeze(1)).T @ design + 1e-9 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, gradient)
        for _ in range(60):  # backtracking: halve until the loss does not increase
            candidate = params - step
            candidate_loss = _platt_loss(design, y, candidate)
            if candidate_loss <= loss:
                break
            step = step / 2
        else:
            break  # no step decreases the loss: at the optimum up to rounding
        params, loss = candidate, candidate_loss
        if step.abs().max() < 1e-10:
            break
    return float(params[0]), float(params[1])
