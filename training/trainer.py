"""The training loop: optimizers, precision, early stopping, learning-rate decay, clipping, logging.

Models stay pure ``nn.Module``s; everything about how they are fitted lives here.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from model.nets.blocks import FieldEmbedding, ModelBatch
from training.config import TrainConfig
from training.data import EncodedData, batches, maybe_prefetch
from training.distributed import DistContext, broadcast_from_main
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


def make_optimizer(model: nn.Module, config: TrainConfig, world: int = 1) -> torch.optim.Optimizer:
    """Adam (fused) with L2 as coupled weight decay per group: embeddings vs dense weights.

    With ``world`` processes and ``lr_scaling="sqrt"`` the learning rate is multiplied by sqrt(world).
    """
    embedding_ids = {id(m.table.weight) for m in model.modules() if isinstance(m, FieldEmbedding)}
    embeddings = [p for p in model.parameters() if id(p) in embedding_ids]
    dense = [p for p in model.parameters() if id(p) not in embedding_ids]
    groups: list[dict[str, Any]] = [
        {"params": embeddings, "weight_decay": config.embedding_l2},
        {"params": dense, "weight_decay": config.net_l2},
    ]
    groups = [g for g in groups if g["params"]]
    opt = config.optimizer
    scale = math.sqrt(world) if config.lr_scaling == "sqrt" else 1.0
    if opt.name == "ftrl":
        return FTRL(
            model.parameters(),
            alpha=opt.ftrl_alpha * scale,
            beta=opt.ftrl_beta,
            l1=opt.ftrl_l1,
            l2=opt.ftrl_l2,
        )
    if opt.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=opt.lr * scale)
    return torch.optim.Adam(groups, lr=opt.lr * scale, fused=True)


def predict_logits(
    model: nn.Module, data: EncodedData, batch_size: int, device: torch.device | None = None
) -> Tensor:
    """Logit of every row (on the CPU), in eval mode and fp32."""
    model.eval()
    device = device or next(model.parameters()).device
    outputs: list[Tensor] = []
    with torch.no_grad():
        for batch, labels in batches(data, batch_size, shuffle=False):
            moved, _ = _to(batch, labels, device)
            outputs.append(model(moved).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def predict(
    model: nn.Module, data: EncodedData, batch_size: int, device: torch.device | None = None
) -> npt.NDArray[np.float32]:
    """CTR of every row, in eval mode and fp32."""
    return torch.sigmoid(predict_logits(model, data, batch_size, device)).numpy()


def evaluate(
    model: nn.Module, data: EncodedData, batch_size: int, device: torch.device | None = None
) -> dict[str, float]:
    """AUC, logloss and calibration of ``model`` on ``data``."""
    return evaluate_predictions(data.labels.numpy(), predict(model, data, batch_size, device))


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


class Trainer:
    """Fits a model on encoded data with the settings of a ``TrainConfig``.

    With a ``DistContext`` the model is wrapped in DistributedDataParallel, each rank trains on its
    slice of every global batch, and rank 0's validation figures drive every rank's decisions.
    ``on_epoch`` sees every epoch's log after validation; an exception it raises ends ``fit`` (a
    hyper-parameter search prunes a trial that way).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        console: Console | None = None,
        context: DistContext | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
    ) -> None:
        self.on_epoch = on_epoch
        self.model = model
        self.config = config
        self.console = console or Console(stderr=True)
        self.context = context
        self.device = resolve_device(config.device)
        model.to(self.device)
        self.network: nn.Module = model
        if context is not None:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            torch.manual_seed(config.seed + context.rank)  # distinct dropout masks per rank
        self.optimizer = make_optimizer(model, config, world=context.world if context else 1)
        self.loss = nn.BCEWithLogitsLoss()
        # The scheduler counts a stalled epoch exactly as early stopping does (same min_delta), and
        # torch's ``patience`` is the number of stalled epochs it tolerates, so decaying after
        # ``lr_decay.patience`` stalled epochs is torch's patience - 1. With torch's patience = ours
        # (the former setting), decay and early stopping fired on the same epoch: the lower rate
        # never got an epoch to train.
        self.scheduler = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max",
                factor=config.lr_decay.factor,
                patience=max(0, config.lr_decay.patience - 1),
                threshold=config.early_stopping.min_delta,
                threshold_mode="abs",
                min_lr=config.lr_decay.min_lr,
            )
            if config.lr_decay is not None
            else None
        )

    def _step(self, batch: ModelBatch, labels: Tensor) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                logits = self.network(batch)
            loss: Tensor = self.loss(logits.float(), labels)
        else:
            loss = self.loss(self.network(batch), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def _batches(self, data: EncodedData, generator: torch.Generator) -> Iterator[tuple[ModelBatch, Tensor]]:
        source = batches(data, self.config.batch_size, shuffle=True, generator=generator)
        if self.context is None:
            yield from (_to(batch, labels, self.device) for batch, labels in source)
            return
        rank, world = self.context.rank, self.context.world
        for batch, labels in source:
            if labels.shape[0] < world:
                continue  # every rank must take the same number of steps
            part = torch.arange(labels.shape[0]).tensor_split(world)[rank]
            shard = ModelBatch(batch.idx[part], batch.val[part], tuple(b[part] for b in batch.bags))
            yield _to(shard, labels[part], self.device)

    def _train_epoch(self, data: EncodedData, generator: torch.Generator, progress: Progress) -> float:
        self.network.train()
        total = torch.zeros((), device=self.device)
        steps = 0
        task = progress.add_task("train", total=math.ceil(len(data) / self.config.batch_size))
        for batch, labels in maybe_prefetch(self._batches(data, generator), self.config.async_loading):
            total += self._step(batch, labels)
            steps += 1
            progress.advance(task)
        progress.remove_task(task)
        return float(total) / max(steps, 1)

    def _validate(self, valid: EncodedData) -> dict[str, float]:
        metrics = None
        if self.context is None or self.context.is_main:
            metrics = evaluate(self.model, valid, self.config.eval_batch_size, self.device)
        result: dict[str, float] = broadcast_from_main(metrics, self.context)
        return result

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
        quiet = not self.console.is_terminal or (self.context is not None and not self.context.is_main)
        with Progress(*columns, console=self.console, transient=True, disable=quiet) as bar:
            for epoch in range(1, config.epochs + 1):
                started = time.perf_counter()
                train_loss = self._train_epoch(train, generator, bar)
                seconds = time.perf_counter() - started
                history.train_seconds += seconds
                history.train_samples += len(train)
                metrics = self._validate(valid)
                entry = self._log_epoch(history, epoch, train_loss, metrics, seconds, len(train))
                if self.on_epoch is not None:
                    self.on_epoch(entry)
                if metrics["auc"] > history.best_auc + config.early_stopping.min_delta:
                    history.best_auc, history.best_epoch, stale = metrics["auc"], epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
                    if stale >= config.early_stopping.patience:
                        log.info("early stopping: no validation AUC gain for %d epochs", stale)
                        break
                if self.scheduler is not None:
                    self.scheduler.step(entry.valid["auc"])
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return history

    def _log_epoch(
        self, history: History, epoch: int, loss: float, metrics: dict[str, float], seconds: float, rows: int
    ) -> EpochLog:
        lr = float(self.optimizer.param_groups[0].get("lr", 0.0))
        entry = EpochLog(epoch, loss, metrics, lr, seconds, rows / seconds)
        history.epochs.append(entry)
        if self.context is None or self.context.is_main:
            log.info(
                "epoch %d: train loss %.5f | valid AUC %.5f logloss %.5f | lr %.2g | %.1f s, %.0f rows/s",
                epoch, loss, metrics["auc"], metrics["logloss"], lr, seconds, entry.samples_per_s,
            )  # fmt: skip
        return entry
