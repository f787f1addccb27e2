"""FTRL-Proximal (McMahan et al., 2013) for logistic regression, as a torch optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


class FTRL(Optimizer):
    """Per-coordinate FTRL-Proximal with L1 and L2; dense tensors.

    z and n accumulate per coordinate; the weight is the closed-form proximal solution
    w = -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2) where |z| > l1, else 0.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        alpha: float = 0.05,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 0.0,
    ) -> None:
        super().__init__(params, {"alpha": alpha, "beta": beta, "l1": l1, "l2": l2})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            alpha, beta, l1, l2 = group["alpha"], group["beta"], group["l1"], group["l2"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                self._update(weight, weight.grad, alpha, beta, l1, l2)
        return loss

    def _update(self, weight: Tensor, grad: Tensor, alpha: float, beta: float, l1: float, l2: float) -> None:
        state = self.state[weight]
        if not state:
            state["z"] = torch.zeros_like(weight)
            state["n"] = torch.zeros_like(weight)
        z, n = state["z"], state["n"]
        sigma = ((n + grad * grad).sqrt() - n.sqrt()) / alpha
        z.add_(grad - sigma * weight)
        n.add_(grad * grad)
        shrunk = z - z.sign() * l1
        denominator = (beta + n.sqrt()) / alpha + l2
        weight.copy_(torch.where(z.abs() > l1, -shrunk / denominator, torch.zeros_like(weight)))
