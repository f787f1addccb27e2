"""``apprank evaluate``: score data with bundles through ONNX Runtime (what the service runs) and compare.

Reports AUC, logloss and calibration (mean predicted CTR / observed CTR) per bundle, and draws a PNG:
the metrics side by side plus a reliability diagram (predicted vs observed CTR by decile). The data is
scored chunk by chunk (raw input, or a prepared dataset encoded with the bundle's encoder), so memory
holds one chunk plus the scores and labels (8 bytes a row), which the exact AUC needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.bundle import Bundle, read_bundle
from model.encoder import Encoded
from training.data import encode_chunks
from training.datasets import resolve_dataset
from training.metrics import evaluate_predictions
from training.prepared.loader import block_data
from training.prepared.manifest import is_prepared
from training.prepared.reader import PreparedDataset, eval_blocks
from training.readers.base import Reader


@dataclass(frozen=True)
class Evaluation:
    """One bundle's figures on one data split."""

    bundle: str
    model: str
    version: str
    split: str
    metrics: dict[str, float]
    labels: npt.NDArray[np.float32]
    ctr: npt.NDArray[Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "model": self.model,
            "version": self.version,
            "split": self.split,
        } | self.metrics


def _pick_split(data: Path, bundle: Bundle, split: str) -> tuple[Reader, str]:
    splits = resolve_dataset(data, bundle.schema)
    chosen = {"train": splits.train, "valid": splits.valid, "test": splits.test}.get(split)
    if chosen is None:
        return splits.train, "all"  # a single file: evaluate every row
    return chosen, split


def _raw_parts(
    data: Path, bundle: Bundle, split: str, batch_rows: int
) -> tuple[Iterator[tuple[Encoded, npt.NDArray[np.float32]]], str]:
    reader, used = _pick_split(data, bundle, split)

    def parts() -> Iterator[tuple[Encoded, npt.NDArray[np.float32]]]:
        for chunk in reader.chunks(batch_rows):
            encoded = encode_chunks(bundle.encoder, [chunk])
            yield encoded.encoded(bundle.encoder.layout), encoded.labels.numpy()

    return parts(), used


def _prepared_parts(
    data: Path, bundle: Bundle, split: str, batch_rows: int
) -> Iterator[tuple[Encoded, npt.NDArray[np.float32]]]:
    dataset = PreparedDataset(data)
    if dataset.encoder.state_dict() != bundle.encoder.state_dict():
        raise ValueError(f"{data}: prepared with another encoder than {bundle.path}'s; evaluate on raw data")
    for block in eval_blocks(dataset, split, rank=0, world=1, batch=batch_rows):
        encoded = block_data(block)
        yield encoded.encoded(bundle.encoder.layout), encoded.labels.numpy()


def evaluate_bundle(path: Path, data: Path, split: str = "test", batch_rows: int = 200_000) -> Evaluation:
    """Score ``data`` (raw, encoded with the bundle's own encoder, or prepared with it) with the
    bundle's ONNX graph, chunk by chunk."""
    import onnxruntime as ort

    bundle = read_bundle(path)
    if is_prepared(data):
        parts, used = _prepared_parts(data, bundle, split, batch_rows), split
    else:
        parts, used = _raw_parts(data, bundle, split, batch_rows)
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    scores, label_parts = [], []
    for encoded, labels in parts:
        (ctr,) = session.run(["ctr"], {name: np.ascontiguousarray(encoded[name]) for name in names})
        scores.append(np.asarray(ctr, dtype=np.float32))
        label_parts.append(labels)
    ctr_all, labels_all = np.concatenate(scores), np.concatenate(label_parts)
    manifest = bundle.manifest
    return Evaluation(
        manifest.name, manifest.model, manifest.version, used, evaluate_predictions(labels_all, ctr_all),
        labels_all, ctr_all,
    )  # fmt: skip


def reliability(
    labels: npt.NDArray[Any], ctr: npt.NDArray[Any], bins: int = 10
) -> tuple[list[float], list[float]]:
    """Mean predicted and observed CTR per quantile bin of the prediction."""
    order = np.argsort(ctr, kind="stable")
    predicted, observed = [], []
    for part in np.array_split(order, bins):
        if part.size:
            predicted.append(float(ctr[part].mean()))
            observed.append(float(labels[part].mean()))
    return predicted, observed


def plot_evaluations(evaluations: list[Evaluation], path: Path) -> None:
    """Bar charts of AUC and logloss per bundle and a reliability diagram, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e.bundle for e in evaluations]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for axis, key in zip(axes[:2], ("auc", "logloss"), strict=True):
        values = [e.metrics[key] for e in evaluations]
        bars = axis.bar(names, values, color="#4477aa")
        axis.bar_label(bars, fmt="%.4f")
        axis.set_title(key.upper() if key == "auc" else key)
        low, high = min(values), max(values)
        axis.set_ylim(low - 0.1 * (high - low + 1e-3), high + 0.1 * (high - low + 1e-3))
        axis.tick_params(axis="x", rotation=30)
    diagonal = axes[2]
    diagonal.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    for evaluation in evaluations:
        predicted, observed = reliability(evaluation.labels, evaluation.ctr)
        label = f"{evaluation.bundle} (calibration {evaluation.metrics['calibration']:.3f})"
        diagonal.plot(predicted, observed, marker="o", label=label)
    diagonal.set_xlabel("mean predicted CTR (decile)")
    diagonal.set_ylabel("observed CTR")
    diagonal.set_title("reliability")
    diagonal.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
