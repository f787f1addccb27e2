"""Loaded model bundles: ONNX Runtime sessions behind an atomically swapped name -> model table.

A bundle is verified by ``model.bundle.read_bundle`` (files, hashes, parity), then its ONNX graph is
checked against the encoder's input layout and run once on an all-missing batch before it may serve.
``reload`` builds the new table aside and swaps one reference, so in-flight requests finish on the model
they started with; a bundle that fails any check is refused and the previous version keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.bundle import Bundle, BundleError, read_bundle, read_manifest
from model.encoder import InputRole
from service.metrics import MODEL_LOAD_FAILURES, MODEL_LOADED
from service.rank.encoding import RequestEncoder

log = logging.getLogger(__name__)
OUTPUT = "ctr"
_ORT_TYPES = {
    InputRole.INDEX: "tensor(int64)",
    InputRole.VALUE: "tensor(float)",
    InputRole.BAG: "tensor(int64)",
}


@dataclass(frozen=True)
class LoadOptions:
    """How bundles are loaded: their ONNX Runtime sessions, and their request encoder's item cache."""

    device: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    item_cache_size: int = 0


def make_session(path: Path, options: LoadOptions) -> Any:
    """An ONNX Runtime session: CUDA when asked for or available (``auto``), CPU otherwise."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if options.device != "cpu" and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif options.device == "cuda":
        raise BundleError("ort_device=cuda but onnxruntime has no CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


@dataclass(frozen=True)
class LoadedModel:
    """A bundle ready to score: its session, request encoder and identity."""

    name: str
    bundle: Bundle
    session: Any
    encoder: RequestEncoder
    loaded_at: datetime

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Predicted CTR ``[B]`` for encoded inputs (one ONNX Runtime call)."""
        out: npt.NDArray[np.float32] = self.session.run([OUTPUT], inputs)[0]
        return out


def load_model(name: str, path: Path, options: LoadOptions) -> LoadedModel:
    """Read, verify and warm up one bundle.

    Raises:
        BundleError: the bundle is broken (the message says which file and why).
    """
    bundle = read_bundle(path)
    try:
        session = make_session(bundle.onnx_path, options)
    except BundleError:
        raise
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for corrupt graphs
        raise BundleError(f"{bundle.onnx_path}: ONNX Runtime cannot load it: {error}") from None
    _check_io(bundle, session)
    encoder = RequestEncoder(bundle.encoder, options.item_cache_size)
    model = LoadedModel(name, bundle, session, encoder, datetime.now(UTC))
    _warm_up(model)
    return model


def _check_io(bundle: Bundle, session: Any) -> None:
    expected = {f.name: _ORT_TYPES[f.role] for f in bundle.encoder.layout.fields}
    actual = {i.name: i.type for i in session.get_inputs()}
    if actual != expected:
        raise BundleError(
            f"{bundle.onnx_path}: graph inputs {sorted(actual.items())} differ from the encoder's layout "
            f"{sorted(expected.items())} (schema mismatch)"
        )
    outputs = [o.name for o in session.get_outputs()]
    if OUTPUT not in outputs:
        raise BundleError(f"{bundle.onnx_path}: no output named {OUTPUT!r} (outputs: {outputs})")


def _warm_up(model: LoadedModel) -> None:
    inputs = model.bundle.encoder.transform({}, 2)
    try:
        ctr = model.run(inputs)
    except Exception as error:  # noqa: BLE001 - any runtime failure refuses the bundle
        raise BundleError(f"{model.bundle.onnx_path}: test run failed: {error}") from None
    if ctr.shape != (2,) or not np.isfinite(ctr).all() or (ctr < 0).any() or (ctr > 1).any():
        raise BundleError(f"{model.bundle.onnx_path}: test run gave {ctr!r}, not 2 probabilities")


@dataclass
class ReloadReport:
    """What a reload did: models (re)loaded, unchanged, refused (with the reason) and removed."""

    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


class ModelRegistry:
    """The models a worker serves, by name (the bundle's subdirectory name under ``models_dir``)."""

    def __init__(self, models_dir: Path, options: LoadOptions) -> None:
        self.models_dir = models_dir
        self.options = options
        self.models: Mapping[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel | None:
        return self.models.get(name)

    def default_name(self) -> str | None:
        """The first model by name (what serves when no experiment applies and none is configured)."""
        return min(self.models) if self.models else None

    def reload(self, keep: Collection[str] = ()) -> ReloadReport:
        """Load new or changed bundles from ``models_dir`` and swap them in.

        Args:
            keep: models that must not disappear (arms of stored experiments): when their directory is
                gone they keep serving and the reload reports them as refused.
        """
        with self._lock:
            report = ReloadReport()
            current = dict(self.models)
            found = self._bundle_dirs()
            new: dict[str, LoadedModel] = {}
            for name, path in found.items():
                model = self._load_one(name, path, current.get(name), report)
                if model is not None:
                    new[name] = model
            for name, old in current.items():
                if name in found:
                    continue
                if name in keep:
                    report.refused[name] = (
                        f"{old.bundle.path}: directory is gone but experiments use {name!r}"
                    )
                    new[name] = old
                else:
                    report.removed.append(name)
            self._publish(current, new)
            self.models = new
            return report

    def _bundle_dirs(self) -> dict[str, Path]:
        if not self.models_dir.is_dir():
            return {}
        return {
            p.name: p
            for p in sorted(self.models_dir.iterdir())
            if p.is_dir() and not p.name.startswith((".", "_")) and not p.name.endswith(".tmp")
        }

    def _load_one(
        self, name: str, path: Path, old: LoadedModel | None, report: ReloadReport
    ) -> LoadedModel | None:
        try:
            if old is not None and old.bundle.path == path and read_manifest(path) == old.bundle.manifest:
                report.unchanged.append(name)
                return old
            model = load_model(name, path, self.options)
        except BundleError as error:
            log.error("refused bundle %s: %s", name, error)
            MODEL_LOAD_FAILURES.labels(name).inc()
            report.refused[name] = str(error)
            return old
        log.info("loaded model %s version %s from %s", name, model.version, path)
        report.loaded.append(name)
        return model

    @staticmethod
    def _publish(old: Mapping[str, LoadedModel], new: Mapping[str, LoadedModel]) -> None:
        for name, model in old.items():
            if new.get(name) is not model:
                model.encoder.flush_metrics()
                MODEL_LOADED.labels(name, model.version).set(0)
        for name, model in new.items():
            MODEL_LOADED.labels(name, model.version).set(1)
