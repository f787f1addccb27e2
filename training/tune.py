"""``apprank tune``: a hyper-parameter search with Optuna over one model family's declared space.

The data is read and encoded once per search; every trial trains on the same encoded train split and
is scored by its best validation AUC (the test split is never read here). Trials report their AUC
after every epoch, so the pruner can stop a poor one early. The study lives in SQLite in the study
folder: started again, a search goes on from the trials stored there (an interrupted trial is run
again with the same values) until the asked number of trials has finished.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState
from rich.console import Console

from model.nets import build_model, model_spec
from model.nets.search import Choice, Dimension, FloatRange, IntRange, LayerStack, Scalar, SearchSpace
from model.schema import FeatureSchema
from training.config import TrainConfig, with_values
from training.datasets import resolve_dataset
from training.pipeline import Splits, _initialise_from_fm, prepare
from training.trainer import EpochLog, Trainer

log = logging.getLogger(__name__)
STUDY_DB = "study.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TuneSettings:
    """One search: the base configuration (model, epochs, seed...) and the search's own settings.

    Attributes:
        base: the configuration every trial starts from; the space's values replace its keys.
        data: what ``apprank train --data`` takes.
        study_dir: where the study (SQLite), the best configuration, the trials table and plots go.
        trials: finished (complete or pruned) trials the study should hold when the search ends.
        timeout: stop starting trials after this many seconds of this run (None: no limit).
        startup_trials: random trials before TPE models the results (None: a third of ``trials``).
        pruner_warmup: epochs every trial runs before it may be pruned.
        pruner_startup: trials that finish unpruned before pruning starts.
        pruner_percentile: a trial whose AUC at an epoch is below this percentile of the other
            trials' AUCs at that epoch is pruned. Low on purpose: early-epoch AUC ranks trials poorly
            (a small step size starts slowly and finishes best, after its learning-rate decay).
    """

    base: TrainConfig
    data: Path
    study_dir: Path
    trials: int
    timeout: float | None = None
    schema: FeatureSchema | None = None
    startup_trials: int | None = None
    pruner_warmup: int = 2
    pruner_startup: int = 3
    pruner_percentile: float = 25.0


def param_names(key: str, dimension: Dimension) -> tuple[str, ...]:
    """The Optuna parameter names of one dimension (a layer stack has two)."""
    return (f"{key}.layers", f"{key}.width") if isinstance(dimension, LayerStack) else (key,)


def suggest(trial: Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample every dimension of ``space``: ``{config key: value}``."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, FloatRange):
            values[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
        elif isinstance(dim, IntRange):
            values[key] = trial.suggest_int(key, dim.low, dim.high, step=dim.step)
        elif isinstance(dim, Choice):
            values[key] = trial.suggest_categorical(key, dim.options)
        else:
            layers = trial.suggest_int(f"{key}.layers", dim.min_layers, dim.max_layers)
            width = trial.suggest_categorical(f"{key}.width", dim.widths) if layers else 0
            values[key] = [width] * layers
    return values


def values_of(params: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A stored trial's Optuna parameters back to ``{config key: value}``."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, LayerStack):
            layers = int(params[f"{key}.layers"])
            values[key] = [int(params[f"{key}.width"])] * layers if layers else []
        else:
            values[key] = params[key]
    return values


def _nearest(options: tuple[Scalar, ...], value: Any) -> Scalar:
    if value in options:
        chosen: Scalar = value
        return chosen
    numeric = [o for o in options if isinstance(o, int | float) and not isinstance(o, bool)]
    if numeric and isinstance(value, int | float):
        return min(numeric, key=lambda option: abs(math.log(option) - math.log(max(value, 1e-12))))
    return options[0]


def starting_point(config: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """The base configuration's values as Optuna parameters, moved into the space where outside it."""
    data = config.model_dump(mode="python")
    point: dict[str, Any] = {}
    for key, dim in space.items():
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:  # a hyper-parameter left to the model's default
            node = model_spec(config.model).params.model_fields[key.split(".")[-1]].default
        if isinstance(dim, FloatRange | IntRange):
            point[key] = type(dim.low)(min(max(node, dim.low), dim.high))
        elif isinstance(dim, Choice):
            point[key] = _nearest(dim.options, node)
        else:
            units = tuple(node)
            point[f"{key}.layers"] = min(max(len(units), dim.min_layers), dim.max_layers)
            if point[f"{key}.layers"]:
                point[f"{key}.width"] = _nearest(dim.widths, units[0] if units else dim.widths[0])
    return point


@dataclass(frozen=True)
class Prepared:
    """The encoded train and validation splits every trial shares (no test split)."""

    data: Splits
    layout: Any
    seconds: float


def prepare_once(settings: TuneSettings) -> Prepared:
    """Read and encode the data once; the test split is left unread (or dropped when cut from one file)."""
    started = time.perf_counter()
    splits = resolve_dataset(settings.data, settings.schema, seed=settings.base.seed)
    if splits.valid is not None:
        splits = dataclasses.replace(splits, test=None)  # a single file is cut by rows as train cuts it
    encoder, data = prepare(splits, settings.base, None)
    prepared = Prepared(dataclasses.replace(data, test=None), encoder.layout, time.perf_counter() - started)
    log.info("encoded %d train / %d valid rows once for every trial", len(data.train), len(data.valid))
    return prepared


def trial_config(base: TrainConfig, trial: Trial) -> TrainConfig:
    """The configuration a trial trains: the base with the trial's sampled values."""
    space = model_spec(base.model).params.search_space
    return with_values(base, suggest(trial, space))


def train_trial(config: TrainConfig, prepared: Prepared, on_epoch: Callable[[EpochLog], None]) -> float:
    """Train one configuration on the shared splits; its best validation AUC.

    Seeds and builds exactly as ``apprank train`` does, so the same configuration reproduces it.
    """
    torch.manual_seed(config.seed)
    model = build_model(config.model, prepared.layout, config.params)
    if model_spec(config.model).pretrain == "fm":
        _initialise_from_fm(model, prepared.layout, prepared.data, config, None)
    quiet = Console(stderr=True, quiet=True)
    history = Trainer(model, config, quiet, on_epoch=on_epoch).fit(prepared.data.train, prepared.data.valid)
    return history.best_auc


def objective(settings: TuneSettings, prepared: Prepared) -> Callable[[Trial], float]:
    """Optuna's objective: a trial's best validation AUC, reported epoch by epoch for pruning."""

    def run(trial: Trial) -> float:
        config = trial_config(settings.base, trial)
        started = time.perf_counter()
        epochs: list[float] = []

        def report(entry: EpochLog) -> None:
            epochs.append(entry.valid["auc"])
            trial.set_user_attr("epochs", entry.epoch)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            trial.report(entry.valid["auc"], entry.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation AUC {entry.valid['auc']:.5f} at epoch {entry.epoch}")

        value = train_trial(config, prepared, report)
        trial.set_user_attr("best_epoch", 1 + epochs.index(max(epochs)))
        return value

    return run


def open_study(settings: TuneSettings) -> optuna.Study:
    """Create the study in ``study_dir/study.db``, or load the one stored there for the same search.

    Raises:
        ValueError: the folder holds a study of another model or base configuration.
    """
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(settings.study_dir / STUDY_DB).absolute()}"
    startup = settings.startup_trials or max(2, settings.trials // 3)
    sampler = optuna.samplers.TPESampler(seed=settings.base.seed, n_startup_trials=startup, multivariate=True)
    pruner = optuna.pruners.PercentilePruner(
        settings.pruner_percentile,
        n_startup_trials=settings.pruner_startup,
        n_warmup_steps=settings.pruner_warmup,
    )
    name = f"apprank-{settings.base.model}"
    study = optuna.create_study(
        storage=storage, sampler=sampler, pruner=pruner, study_name=name, direction="maximize",
        load_if_exists=True,
    )  # fmt: skip
    identity = {
        "model": settings.base.model,
        "base": settings.base.model_dump(mode="json", exclude={"threads"}),
    }
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("data", str(settings.data))
        study.enqueue_trial(
            starting_point(settings.base, model_spec(settings.base.model).params.search_space)
        )
    elif stored != identity:
        raise ValueError(f"{settings.study_dir} holds a study of another search; use another --study")
    _requeue_interrupted(study)
    return study


def _requeue_interrupted(study: optuna.Study) -> None:
    """Trials left running by an interrupted search are marked failed and queued again, same values."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)
        log.info("trial %d was interrupted: queued again with the same values", trial.number)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that completed or were pruned."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def run_search(
    settings: TuneSettings, callback: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> optuna.Study:
    """Run trials until the study holds ``settings.trials`` finished ones (or the timeout passes)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(settings)
    remaining = settings.trials - len(finished(study))
    if remaining <= 0:
        log.info("the study already holds %d finished trials", len(finished(study)))
        return study
    prepared = prepare_once(settings)
    callbacks = [callback] if callback is not None else None
    study.optimize(
        objective(settings, prepared), n_trials=remaining, timeout=settings.timeout, callbacks=callbacks
    )
    return study


def best_config(study: optuna.Study, base: TrainConfig) -> TrainConfig:
    """The base configuration with the best trial's values."""
    space = model_spec(base.model).params.search_space
    return with_values(base, values_of(study.best_trial.params, space))
