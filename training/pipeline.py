"""``apprank train`` end to end: read, fit the encoder, encode, train, evaluate, export, write a bundle."""

from __future__ import annotations

import logging
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from model.bundle import (
    WEIGHTS,
    Manifest,
    ParityReport,
    ServingGraphs,
    new_version,
    read_bundle,
    read_manifest,
    sha256_file,
    write_bundle,
)
from model.encoder import FeatureEncoder, InputLayout
from model.export import OPSET, PARITY_ROWS, export_onnx, export_serving_graphs, parity_check
from model.fitting import EncoderFitter
from model.nets import build_model, model_spec
from model.nets.calibration import PlattScaled, fit_platt
from model.schema import FeatureSchema
from training.agreement import check_same_run, run_identity
from training.checkpoint import Checkpoint, Checkpointer, is_checkpoint_dir, load_checkpoint
from training.config import TrainConfig, load_config
from training.data import EncodedData, encode_chunks, limit_rows, split_rows
from training.datasets import DatasetSplits, data_fingerprint
from training.distributed import DistContext, init_distributed, shutdown
from training.readers.base import Chunk, Reader
from training.sources import Streamed, open_stream, resolve_source
from training.trainer import EvalData, History, Trainer, evaluate, logits_and_labels, resolve_device

log = logging.getLogger(__name__)
INT8_GATE_ROWS = 50_000  # test rows the int8 graph's AUC is compared on (frappe_ctr's test split: all)


class ExportError(RuntimeError):
    """The exported ONNX graph does not reproduce the PyTorch model (parity check failed)."""


@dataclass(frozen=True)
class Splits:
    """Encoded train / valid / test data."""

    train: EncodedData
    valid: EncodedData
    test: EncodedData | None


@dataclass(frozen=True)
class TrainResult:
    """What ``train_bundle`` produced."""

    bundle: Path
    manifest: Manifest
    history: History
    metrics: dict[str, dict[str, float]]


def _limited(reader: Reader, config: TrainConfig) -> Iterator[Chunk]:
    return limit_rows(reader.chunks(config.chunk_rows), config.max_rows)


def fit_on(schema: FeatureSchema, chunks: Iterator[Chunk], vocab_cap: int | None = None) -> FeatureEncoder:
    """Fit an encoder in one streaming pass (a vocabulary past ``vocab_cap`` falls back to hashing)."""
    fitter = EncoderFitter(schema, vocab_cap=vocab_cap)
    for chunk in chunks:
        fitter.update(chunk.columns)
    return fitter.finish()


def prepare(
    splits: DatasetSplits, config: TrainConfig, encoder: FeatureEncoder | None
) -> tuple[FeatureEncoder, Splits]:
    """Fit the encoder on the training rows (unless given) and encode every split.

    A single file is split by rows (shuffled by the seed) before fitting, so no valid/test value
    leaks into the vocabulary.
    """
    if splits.valid is not None:
        encoder = encoder or fit_on(splits.schema, _limited(splits.train, config), config.prepare.vocab_cap)
        train = encode_chunks(encoder, _limited(splits.train, config))
        valid = encode_chunks(encoder, splits.valid.chunks(config.chunk_rows))
        test = (
            encode_chunks(encoder, splits.test.chunks(config.chunk_rows)) if splits.test is not None else None
        )
        return encoder, Splits(train, valid, test)
    chunks = list(_limited(splits.train, config))
    rows = sum(c.num_rows for c in chunks)
    order = np.random.default_rng(config.seed).permutation(rows)
    n_valid, n_test = int(rows * config.valid_fraction), int(rows * config.test_fraction)
    whole = _concat(chunks)
    train_rows = np.sort(order[n_valid + n_test :])
    encoder = encoder or fit_on(splits.schema, iter([_take(whole, train_rows)]), config.prepare.vocab_cap)
    encoded = encode_chunks(encoder, [whole])
    train, valid, test = split_rows(encoded, order, n_valid, n_test)
    return encoder, Splits(train, valid, test if n_test else None)


def _concat(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    columns = {name: np.concatenate([c.columns[name] for c in chunks]) for name in chunks[0].columns}
    return Chunk(columns, np.concatenate([c.labels for c in chunks]), 1)


def _take(chunk: Chunk, rows: np.ndarray) -> Chunk:
    return Chunk({name: values[rows] for name, values in chunk.columns.items()}, chunk.labels[rows], 1)


RunSplits = Splits | Streamed


def _export(
    model: nn.Module, encoder: FeatureEncoder, data: RunSplits, staging: Path, serving_graphs: bool
) -> tuple[ParityReport, ServingGraphs]:
    """The plain graph (parity or ExportError), then the request-shaped graphs where the model allows
    (and ``serving_graphs`` asks for them)."""
    reference = data.test if data.test is not None and len(data.test) else data.valid
    sample = reference.head(PARITY_ROWS).encoded(encoder.layout)
    export_onnx(model, encoder.layout, sample, staging / "model.onnx")
    report = parity_check(model, encoder.layout, sample, staging / "model.onnx")
    if not report.passed:
        raise ExportError(
            f"ONNX parity check failed: max |ctr_onnx - ctr_torch| = {report.max_abs_diff:.3g} "
            f"on {report.rows} rows > tolerance {report.tolerance:g}"
        )
    if not serving_graphs:
        return report, ServingGraphs(graph="plain", reason="serving_graphs is off: model.onnx only")
    gate = reference.head(INT8_GATE_ROWS)
    test = (gate.encoded(encoder.layout), gate.labels.numpy())
    calibration = data.valid.head(PARITY_ROWS).encoded(encoder.layout)  # static int8 scales: validation rows
    serving = export_serving_graphs(
        model, encoder.layout, encoder.schema, sample, staging, test, calibration=calibration
    )
    return report, serving


def _metrics(
    model: nn.Module, data: RunSplits, history: History, config: TrainConfig, context: DistContext | None
) -> dict[str, dict[str, float]]:
    """Validation and test figures; a stream is scored by every rank and gathered (exact over all rows)."""
    ctx = context if isinstance(data, Streamed) else None
    prefetch = config.async_loading
    metrics = {"valid": evaluate(model, data.valid, config.eval_batch_size, None, ctx, prefetch)}
    if data.test is not None and len(data.test):
        metrics["test"] = evaluate(model, data.test, config.eval_batch_size, None, ctx, prefetch)
    metrics["training"] = {
        "epochs": float(len(history.epochs)),
        "best_epoch": float(history.best_epoch),
        "train_seconds": history.train_seconds,
        "train_samples_per_s": history.samples_per_s,
        "train_data_wait_s": history.train_data_wait_s,
        "train_rows": float(len(data.train)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "streamed": float(isinstance(data, Streamed)),
    }
    if isinstance(model, PlattScaled):
        metrics["training"] |= {"platt_scale": float(model.scale), "platt_shift": float(model.shift)}
    return metrics


# Settings of an FNN run that its FM pre-training takes over (the rest are the FM's defaults).
FNN_PRETRAIN_SHARED = ("epochs", "batch_size", "eval_batch_size", "precision", "device", "threads")


def _initialise_from_fm(
    model: nn.Module, layout: InputLayout, data: RunSplits, config: TrainConfig, console: Console | None,
    context: DistContext | None = None,
) -> None:  # fmt: skip
    """FNN: train an FM with the same embedding size, then start from its latent vectors and weights."""
    dim = model.get_parameter("embedding.table.weight").shape[1]
    fm_config = load_config(None, [f"embedding_dim={dim}", f"seed={config.seed}"], model="fm")
    # the FM keeps its own optimizer and L2 defaults but runs with this run's batching and execution
    fm_config = fm_config.model_copy(update={key: getattr(config, key) for key in FNN_PRETRAIN_SHARED})
    log.info("FNN: pre-training an FM (embedding %d) to initialise the embedding", dim)
    fm = build_model("fm", layout, fm_config.params)
    Trainer(fm, fm_config, console, context).fit(data.train, data.valid)
    with torch.no_grad():
        model.get_parameter("embedding.table.weight").copy_(fm.get_parameter("embedding.table.weight"))


def _calibrated(
    model: nn.Module, valid: EvalData, config: TrainConfig, context: DistContext | None = None
) -> nn.Module:
    """The model with Platt scaling fitted on the validation split (or the model itself)."""
    if not config.calibrate:
        return model
    logits, labels = logits_and_labels(
        model, valid, config.eval_batch_size, None, context, config.async_loading
    )
    scale, shift = fit_platt(logits, labels)
    log.info("calibration (Platt scaling on the validation split): logit * %.4f %+.4f", scale, shift)
    return PlattScaled(model, scale, shift)


def _resume(path: Path) -> tuple[FeatureEncoder, dict[str, Any]]:
    bundle = read_bundle(path)
    state = torch.load(bundle.path / WEIGHTS, map_location="cpu", weights_only=True)
    return bundle.encoder, state


@dataclass(frozen=True)
class _Data:
    """The run's rows (in memory or streamed) with their encoder, schema and fingerprint."""

    rows: RunSplits
    encoder: FeatureEncoder
    schema: FeatureSchema
    fingerprint: str


def _load_data(
    data_path: Path, schema: FeatureSchema | None, config: TrainConfig, context: DistContext | None,
    console: Console | None, warm: FeatureEncoder | None,
) -> _Data:  # fmt: skip
    started = time.perf_counter()
    splits, prepared = resolve_source(data_path, schema, config, context, console, warm)
    if prepared is not None:
        pin = resolve_device(config.device).type == "cuda"
        stream = open_stream(prepared, config, context, pin_memory=pin)
        if warm is not None and warm.state_dict() != stream.encoder.state_dict():
            raise ValueError(f"{data_path}: prepared with another encoder than the bundle resumed from")
        log.info("data: %s (streamed)", stream.description)
        return _Data(stream, stream.encoder, stream.schema, stream.fingerprint)
    assert splits is not None
    log.info("data: %s", splits.description)
    encoder, data = prepare(splits, config, warm)
    log.info(
        "encoded %d train / %d valid rows in %.1f s",
        len(data.train),
        len(data.valid),
        time.perf_counter() - started,
    )
    return _Data(data, encoder, splits.schema, data_fingerprint(splits))


def _checkpointing(
    out: Path, config: TrainConfig, data: _Data, context: DistContext | None, resume: Path | None
) -> tuple[Checkpointer | None, Checkpoint | None]:
    """The run's checkpointer (when ``checkpoint_every`` is set) and the checkpoint to resume from."""
    ignored = {"epochs", "checkpoint_every", "version", "name", "serving_graphs"}  # export only
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in ignored}
    run = {"config": settings, "data": data.fingerprint, "world": context.world if context else 1}
    folder = resume if resume is not None else out.parent / f"{out.name}.checkpoints"
    checkpoint = load_checkpoint(resume, run) if resume is not None else None
    every = config.checkpoint_every
    return (Checkpointer(folder, every, run, context) if every is not None else None), checkpoint


def _fine_tuning(config: TrainConfig) -> TrainConfig:
    """The configuration a warm start trains with: ``optimizer.lr`` times ``warm_lr_factor``."""
    optimizer = config.optimizer.model_copy(update={"lr": config.optimizer.lr * config.warm_lr_factor})
    return config.model_copy(update={"optimizer": optimizer})


def train_bundle(
    data_path: Path,
    out: Path,
    config: TrainConfig,
    *,
    schema: FeatureSchema | None = None,
    resume: Path | None = None,
    console: Console | None = None,
) -> TrainResult | None:
    """Train ``config.model`` on the data at ``data_path`` and write a verified bundle at ``out``.

    ``data_path`` is raw input (in memory within ``memory_budget``, else prepared and streamed) or a
    prepared dataset (streamed). ``resume`` is a bundle to warm-start from, or a step-checkpoint
    folder (``<out>.checkpoints``) to continue an interrupted run exactly. Under torchrun every rank
    trains its share; only rank 0 exports and returns a result (the other ranks return None).

    Raises:
        ExportError: ONNX Runtime disagrees with PyTorch beyond the tolerance (nothing is written).
    """
    context = init_distributed(resolve_device(config.device))
    continuing = resume is not None and is_checkpoint_dir(resume)
    encoder, state = _resume(resume) if resume is not None and not continuing else (None, None)
    data = _load_data(data_path, schema, config, context, console, encoder)
    check_same_run(context, run_identity(config, data.fingerprint, data.schema, data.rows))
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.encoder.layout, config.params)
    if state is not None:
        model.load_state_dict(state)
    elif model_spec(config.model).pretrain == "fm" and not continuing:
        _initialise_from_fm(model, data.encoder.layout, data.rows, config, console, context)
    checkpoints, checkpoint = _checkpointing(out, config, data, context, resume if continuing else None)
    trainer = Trainer(model, _fine_tuning(config) if state is not None else config, console, context)
    history = trainer.fit(data.rows.train, data.rows.valid, checkpoints=checkpoints, resume=checkpoint)
    streamed = isinstance(data.rows, Streamed)
    if not streamed:
        shutdown(context)
        if context is not None and not context.is_main:
            return None
    served = _calibrated(model, data.rows.valid, config, context if streamed else None)
    metrics = _metrics(served, data.rows, history, config, context)
    if streamed:
        shutdown(context)
        if context is not None and not context.is_main:
            return None
    result = _finish(served, model, data, config, metrics, out)
    if checkpoints is not None:
        shutil.rmtree(checkpoints.folder, ignore_errors=True)  # the run is complete: nothing to resume
    return TrainResult(result, read_manifest(result), history, metrics)


def _finish(
    served: nn.Module, model: nn.Module, data: _Data, config: TrainConfig,
    metrics: dict[str, dict[str, float]], out: Path,
) -> Path:  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        return _write(served, model, data, config, metrics, out, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the bundle was written


def _write(
    served: nn.Module,
    model: nn.Module,
    data: _Data,
    config: TrainConfig,
    metrics: dict[str, dict[str, float]],
    out: Path,
    staging: Path,
) -> Path:
    """Export the served model, check parity, keep the raw model's weights, move the bundle into place."""
    served.cpu()
    parity, serving = _export(served, data.encoder, data.rows, staging, config.serving_graphs)
    torch.save(model.state_dict(), staging / WEIGHTS)
    manifest = Manifest(
        name=config.name or out.name,
        model=config.model,
        version=config.version or new_version(),
        created_at=datetime.now(UTC),
        schema_hash=data.schema.content_hash(),
        data_fingerprint=data.fingerprint,
        onnx_sha256=sha256_file(staging / "model.onnx"),
        opset=OPSET,
        inputs=[f.name for f in data.encoder.layout.fields],
        parity=parity,
        metrics=metrics,
        hyperparameters=config.model_dump(mode="json"),
        serving=serving,
    )
    return write_bundle(out, manifest, data.schema, data.encoder, staging)


def describe(result: TrainResult) -> list[tuple[str, str]]:
    """Key figures of a run, for the CLI's summary table."""
    rows = [
        ("bundle", str(result.bundle)),
        ("model", result.manifest.model),
        ("version", result.manifest.version),
    ]
    for split in ("valid", "test"):
        if split in result.metrics:
            m = result.metrics[split]
            rows.append(
                (split, f"AUC {m['auc']:.4f}  logloss {m['logloss']:.4f}  calibration {m['calibration']:.3f}")
            )
    training = result.metrics["training"]
    rows.append(("epochs", f"{int(training['epochs'])} (best {int(training['best_epoch'])})"))
    rows.append(("throughput", f"{training['train_samples_per_s']:,.0f} samples/s"))
    rows.append(
        (
            "parity",
            f"max |diff| {result.manifest.parity.max_abs_diff:.2g} on {result.manifest.parity.rows} rows",
        )
    )
    return rows
