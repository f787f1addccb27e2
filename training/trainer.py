"""The training loop: optimizers, precision, early stopping, learning-rate decay, clipping, logging.

Models stay pure ``nn.Module``s; everything about how they are fitted lives here.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from model.nets.blocks import FieldEmbedding
from training.config import TrainConfig
from training.data import EncodedData, batches, maybe_prefetch
from training.metrics import evaluate_predictions
from training.optim import FTRL

log = logging.getLogger(__name__)


@dataclass
class EpochLog:
    """One epoch's figures."""

    epoch: int
    train_loss: float
    valid: dict[str, float]
    lr: float
    seconds: float
    samples_per_s: float


@dataclass
class History:
    """What happened during ``fit``: per-epoch logs, the best epoch and the training throughput."""

    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_auc: float = float("-inf")
    train_seconds: float = 0.0
    train_samples: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns the generator used for shuffling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam (fused on CPU) with L2 as coupled weight decay per group: embeddings vs dense weights."""
    embedding_ids = {id(m.table.weight) for m in model.modules() if isinstance(m, FieldEmbedding)}
    embeddings = [p for p in model.parameters() if id(p) in embedding_ids]
    dense = [p for p in model.parameters() if id(p) not in embedding_ids]
    groups: list[dict[str, Any]] = [
        {"params": embeddings, "weight_decay": config.embedding_l2},
        {"params": dense, "weight_decay": config.net_l2},
    ]
    groups = [g for g in groups if g["params"]]
    opt = config.optimizer
    if opt.name == "ftrl":
        return FTRL(
            model.parameters(), alpha=opt.ftrl_alpha, beta=opt.ftrl_beta, l1=opt.ftrl_l1, l2=opt.ftrl_l2
        )
    if opt.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=opt.lr)
    return torch.optim.Adam(groups, lr=opt.lr, fused=True)


def predict_logits(model: nn.Module, data: EncodedData, batch_size: int) -> Tensor:
    """Logit of every row, in eval mode and fp32."""
    model.eval()
    outputs: list[Tensor] = []
    with torch.no_grad():
        for batch, _ in batches(data, batch_size, shuffle=False):
            outputs.append(model(batch).float())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def predict(model: nn.Module, data: EncodedData, batch_size: int) -> npt.NDArray[np.float32]:
    """CTR of every row, in eval mode and fp32."""
    return torch.sigmoid(predict_logits(model, data, batch_size)).numpy()


def evaluate(model: nn.Module, data: EncodedData, batch_size: int) -> dict[str, float]:
    """AUC, logloss and calibration of ``model`` on ``data``."""
    return evaluate_predictions(data.labels.numpy(), predict(model, data, batch_size))


class Trainer:
    """Fits a model on encoded data with the settings of a ``TrainConfig``."""

    def __init__(self, model: nn.Module, config: TrainConfig, console: Console | None = None) -> None:
        self.model = model
        self.config = config
        self.console = console or Console(stderr=True)
        self.optimizer = make_optimizer(model, config)
        self.loss = nn.BCEWithLogitsLoss()
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max",
                factor=config.lr_decay.factor,
                patience=config.lr_decay.patience,
                min_lr=config.lr_decay.min_lr,
            )
            if config.lr_decay is not None
            else None
        )

    def _step(self, batch: Any, labels: Tensor) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self.model(batch)
            loss: Tensor = self.loss(logits.float(), labels)
        else:
            loss = self.loss(self.model(batch), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def _train_epoch(self, data: EncodedData, generator: torch.Generator, progress: Progress) -> float:
        self.model.train()
        total = torch.zeros(())
        steps = 0
        task = progress.add_task("train", total=math.ceil(len(data) / self.config.batch_size))
        source = batches(data, self.config.batch_size, shuffle=True, generator=generator)
        for batch, labels in maybe_prefetch(source, self.config.async_loading):
            total += self._step(batch, labels)
            steps += 1
            progress.advance(task)
        progress.remove_task(task)
        return float(total) / max(steps, 1)

    def fit(self, train: EncodedData, valid: EncodedData) -> History:
        """Train until early stopping or ``epochs``; the model ends with its best validation weights."""
        config = self.config
        generator = seed_everything(config.seed)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        history = History()
        best_state: dict[str, Tensor] | None = None
        stale = 0
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(
            *columns, console=self.console, transient=True, disable=not self.console.is_terminal
        ) as bar:
            for epoch in range(1, config.epochs + 1):
                started = time.perf_counter()
                train_loss = self._train_epoch(train, generator, bar)
                seconds = time.perf_counter() - started
                history.train_seconds += seconds
                history.train_samples += len(train)
                metrics = evaluate(self.model, valid, config.eval_batch_size)
                lr = float(self.optimizer.param_groups[0].get("lr", 0.0))
                entry = EpochLog(epoch, train_loss, metrics, lr, seconds, len(train) / seconds)
                history.epochs.append(entry)
                log.info(
                    "epoch %d: train loss %.5f | valid AUC %.5f logloss %.5f | lr %.2g | %.1f s, %.0f rows/s",
                    epoch, train_loss, metrics["auc"], metrics["logloss"], lr, seconds, entry.samples_per_s,
                )  # fmt: skip
                if metrics["auc"] > history.best_auc + config.early_stopping.min_delta:
                    history.best_auc, history.best_epoch, stale = metrics["auc"], epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
                    if stale >= config.early_stopping.patience:
                        log.info("early stopping: no validation AUC gain for %d epochs", stale)
                        break
                if self.scheduler is not None:
                    self.scheduler.step(metrics["auc"])
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return history
