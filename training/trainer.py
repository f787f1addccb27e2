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
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor, nn
from torch.nn import functional

from model.nets.blocks import FieldEmbedding, ModelBatch
from training.checkpoint import Checkpoint, Checkpointer, LoopState
from training.config import TrainConfig
from training.data import EncodedData, batches, maybe_prefetch
from training.distributed import DistContext, broadcast_from_main
from training.optim import FTRL
from training.prepared.loader import StepBatch, StreamEval, StreamTrain
from training.prepared.progress import row_progress
from training.scoring import (
    EvalData,
    _to,
    evaluate,
    logits_and_labels,
    predict,
    predict_logits,
    resolve_device,
)

__all__ = [
    "EpochLog", "EvalData", "History", "TrainData", "Trainer", "evaluate", "logits_and_labels",
    "make_optimizer", "predict", "predict_logits", "resolve_device", "seed_everything",
]  # fmt: skip

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
    data_wait_s: float = 0.0  # of ``seconds``, the time the loop waited for its next batch


@dataclass
class History:
    """What happened during ``fit``: per-epoch logs, the best epoch and the training throughput."""

    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_auc: float = float("-inf")
    train_seconds: float = 0.0
    train_samples: int = 0
    train_data_wait_s: float = 0.0

    @property
    def samples_per_s(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        if not data:
            return cls()
        epochs = [EpochLog(**entry) for entry in data["epochs"]]
        return cls(
            epochs, data["best_epoch"], data["best_auc"], data["train_seconds"], data["train_samples"],
            data.get("train_data_wait_s", 0.0),
        )  # fmt: skip


TrainData = EncodedData | StreamTrain


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


class Trainer:
    """Fits a model on encoded data with the settings of a ``TrainConfig``.

    With a ``DistContext`` the model is wrapped in DistributedDataParallel, each rank trains on its
    slice of every global batch, and rank 0's validation figures drive every rank's decisions.
    ``on_epoch`` sees every epoch's log after validation; an exception it raises ends ``fit`` (a
    hyper-parameter search prunes a trial that way). ``on_step`` sees the global step number after
    each step. The data is in memory (``EncodedData``) or a prepared dataset streamed per rank
    (``StreamTrain`` / ``StreamEval``).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        console: Console | None = None,
        context: DistContext | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self.on_epoch = on_epoch
        self.on_step = on_step
        self.best_state: dict[str, Any] | None = None
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

    def _step(self, step: StepBatch) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                logits = self.network(step.batch).float()
        else:
            logits = self.network(step.batch)
        loss = self._loss(logits, step)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return loss.detach()

    def _loss(self, logits: Tensor, step: StepBatch) -> Tensor:
        """The mean over the step's rows; a stream's is taken over the real rows of every rank (DDP
        averages gradients over ranks, hence the factor ``world``)."""
        if step.step_rows < 0:
            loss: Tensor = self.loss(logits, step.labels)
            return loss
        per_row = functional.binary_cross_entropy_with_logits(logits, step.labels, reduction="none")
        if step.mask is not None:
            per_row = per_row * step.mask.to(per_row.device)
        world = self.context.world if self.context is not None else 1
        return per_row.sum() * (world / step.step_rows)

    def _batches(self, data: EncodedData, generator: torch.Generator) -> Iterator[tuple[ModelBatch, Tensor]]:
        source = batches(data, self.config.batch_size, shuffle=True, generator=generator)
        if self.context is None:
            yield from source
            return
        rank, world = self.context.rank, self.context.world
        for batch, labels in source:
            if labels.shape[0] < world:
                continue  # every rank must take the same number of steps
            part = torch.arange(labels.shape[0]).tensor_split(world)[rank]
            yield (
                ModelBatch(batch.idx[part], batch.val[part], tuple(b[part] for b in batch.bags)),
                labels[part],
            )

    def _inputs(self, data: TrainData, generator: torch.Generator, loop: LoopState) -> Iterator[StepBatch]:
        """The epoch's step inputs on this process's device, from step ``loop.step`` on."""
        if isinstance(data, StreamTrain):
            source: Iterator[StepBatch] = data.epoch(loop.epoch, skip=loop.step)
        else:
            pairs = islice(self._batches(data, generator), loop.step, None)
            source = (StepBatch(b, y, None, -1) for b, y in pairs)
        for step in source:
            batch, labels = _to(step.batch, step.labels, self.device)
            yield StepBatch(batch, labels, step.mask, step.step_rows)

    def _steps(self, data: TrainData) -> int:
        if isinstance(data, StreamTrain):
            return data.steps
        return math.ceil(len(data) / self.config.batch_size)

    def _train_epoch(
        self, data: TrainData, generator: torch.Generator, progress: Progress, loop: LoopState,
        checkpoints: Checkpointer | None,
    ) -> float:  # fmt: skip
        """Train from ``loop.step`` to the end of the epoch; returns the mean training loss."""
        self.network.train()
        started = time.perf_counter()
        task = progress.add_task(f"epoch {loop.epoch}", total=len(data))
        # float64, continued from the checkpoint's sum: a resumed epoch adds in the same order
        total = torch.full((), loop.loss_sum, dtype=torch.float64, device=self.device)
        depth = self.config.stream.prefetch_batches
        steps = iter(maybe_prefetch(self._inputs(data, generator, loop), self.config.async_loading, depth))
        while True:
            # the time spent getting the next batch: the whole data path when synchronous, only the wait
            # on the background reader when asynchronous (what asynchronous reading hides is the gap)
            asked = time.perf_counter()
            step = next(steps, None)
            loop.data_wait_s += time.perf_counter() - asked
            if step is None:
                break
            total += self._step(step).double()
            loop.step += 1
            loop.global_step += 1
            progress.advance(task, step.step_rows if step.step_rows >= 0 else self.config.batch_size)
            if self.on_step is not None:
                self.on_step(loop.global_step)
            if checkpoints is not None and checkpoints.due(loop.global_step):
                self._checkpoint(checkpoints, loop, total, started)
        progress.remove_task(task)
        loop.loss_sum = float(total)
        return loop.loss_sum / max(self._steps(data), 1)

    def _checkpoint(self, checkpoints: Checkpointer, loop: LoopState, total: Tensor, started: float) -> None:
        snapshot = copy.copy(loop)
        snapshot.loss_sum = float(total)
        snapshot.epoch_seconds += time.perf_counter() - started
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "best_state": self.best_state,
        }
        checkpoints.save(payload, snapshot)

    def _validate(self, valid: EvalData) -> dict[str, float]:
        batch = self.config.eval_batch_size
        if isinstance(valid, StreamEval):  # every rank scores its part; gathered, identical everywhere
            return evaluate(self.model, valid, batch, self.device, self.context, self.config.async_loading)
        metrics = None
        if self.context is None or self.context.is_main:
            metrics = evaluate(self.model, valid, batch, self.device)
        result: dict[str, float] = broadcast_from_main(metrics, self.context)
        return result

    def _restore(self, checkpoint: Checkpoint, generator: torch.Generator) -> LoopState:
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        if self.scheduler is not None and checkpoint.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.scheduler)
        self.best_state = checkpoint.best_state
        torch.set_rng_state(checkpoint.rng[self.context.rank if self.context is not None else 0])
        loop = checkpoint.loop
        if loop.generator_state is not None:
            generator.set_state(loop.generator_state)
        log.info("resumed at epoch %d, step %d (global step %d)", loop.epoch, loop.step, loop.global_step)
        return loop

    def fit(
        self, train: TrainData, valid: EvalData, *, checkpoints: Checkpointer | None = None,
        resume: Checkpoint | None = None,
    ) -> History:  # fmt: skip
        """Train until early stopping or ``epochs``; the model ends with its best validation weights.

        With ``checkpoints`` a step checkpoint is written every ``checkpoint_every`` steps; ``resume``
        continues the run that wrote one.
        """
        config = self.config
        generator = seed_everything(config.seed)
        if self.context is not None:
            torch.manual_seed(config.seed + self.context.rank)  # distinct dropout masks per rank
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        loop = self._restore(resume, generator) if resume is not None else LoopState()
        history = History.from_dict(loop.history)
        quiet = not self.console.is_terminal or (self.context is not None and not self.context.is_main)
        with row_progress(self.console, disable=quiet) as bar:
            while loop.epoch <= config.epochs:
                if loop.step == 0:
                    loop.generator_state = generator.get_state()  # the epoch's order, for a resume
                started = time.perf_counter()
                train_loss = self._train_epoch(train, generator, bar, loop, checkpoints)
                loop.epoch_seconds += time.perf_counter() - started
                history.train_seconds += loop.epoch_seconds
                history.train_samples += len(train)
                history.train_data_wait_s += loop.data_wait_s
                metrics = self._validate(valid)
                entry = self._log_epoch(
                    history, loop.epoch, train_loss, metrics, loop.epoch_seconds, len(train), loop.data_wait_s
                )
                if self.on_epoch is not None:
                    self.on_epoch(entry)
                if metrics["auc"] > history.best_auc + config.early_stopping.min_delta:
                    history.best_auc, history.best_epoch, loop.stale = metrics["auc"], loop.epoch, 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                else:
                    loop.stale += 1
                    if loop.stale >= config.early_stopping.patience:
                        log.info("early stopping: no validation AUC gain for %d epochs", loop.stale)
                        break
                if self.scheduler is not None:
                    self.scheduler.step(entry.valid["auc"])
                loop.epoch, loop.step, loop.loss_sum, loop.epoch_seconds = loop.epoch + 1, 0, 0.0, 0.0
                loop.data_wait_s = 0.0
                loop.history = history.to_dict()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.release()
        return history

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper (training is over; the model stays).

        DDP's reducer holds the process group: left alive, the group outlives
        ``destroy_process_group`` and is torn down at interpreter exit, when gloo's threads can no
        longer take the GIL (a rare SIGABRT, "terminate called without an active exception").
        """
        self.network = self.model  # ``distributed.shutdown`` collects what the wrapper leaves behind

    def _log_epoch(
        self, history: History, epoch: int, loss: float, metrics: dict[str, float], seconds: float, rows: int,
        data_wait_s: float,
    ) -> EpochLog:  # fmt: skip
        lr = float(self.optimizer.param_groups[0].get("lr", 0.0))
        speed = rows / seconds if seconds > 0 else 0.0
        entry = EpochLog(epoch, loss, metrics, lr, seconds, speed, data_wait_s)
        history.epochs.append(entry)
        if self.context is None or self.context.is_main:
            log.info(
                "epoch %d: train loss %.5f | valid AUC %.5f logloss %.5f | lr %.2g | %.1f s, %.0f rows/s, "
                "%.1f s waiting for data",
                epoch, loss, metrics["auc"], metrics["logloss"], lr, seconds, speed, data_wait_s,
            )  # fmt: skip
        return entry
