"""Loaded model bundles: ONNX Runtime sessions behind an atomically swapped name -> model table.

A bundle is verified by ``model.bundle.read_bundle`` (files, hashes, parity), then its ONNX graph is
checked against the encoder's input layout and run once on an all-missing batch before it may serve.
A bundle with request-shaped graphs (``Manifest.serving``) serves through them unless
``LoadOptions.request_graph`` is off: the item graph runs inside the request encoder (for candidates
the item cache does not know), the request graph scores; ``LoadOptions.int8`` picks the int8 request
graph where the export's gate let the bundle keep one.
``reload`` builds the new tables aside and swaps references, so in-flight requests finish on the model
they started with; a bundle that fails any check is refused and the previous version keeps serving.

Every kept version of a model (``model.versions``) is loaded: ``get("deepfm")`` is the one ``current``
points at, ``get("deepfm@20261202.040000")`` a pinned one (what an experiment arm may name).
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

from model.bundle import (
    INT8_ONNX,
    ITEM_PART,
    ITEMS_ONNX,
    REQUEST_ONNX,
    Bundle,
    BundleError,
    ServingGraphs,
    read_bundle,
    read_manifest,
)
from model.encoder import InputRole
from model.versions import current_version, is_flat, list_versions
from service.metrics import MODEL_AGE, MODEL_LOAD_FAILURES, MODEL_LOADED
from service.rank.encoding import RequestEncoder
from service.rank.retrain_status import publish_retrain_status

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
    request_graph: bool = False  # the service turns it on (ServiceSettings.request_graph)
    int8: bool = False  # the service turns it on too (ServiceSettings.int8)


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
    """A bundle ready to score: its session, request encoder and identity.

    ``graph`` is what ``session`` runs: ``plain`` (model.onnx), ``request`` or ``request-int8``; with a
    request graph the item graph's session sits in ``items_session`` (run by the encoder).
    """

    name: str
    bundle: Bundle
    session: Any
    encoder: RequestEncoder
    loaded_at: datetime
    graph: str = "plain"
    items_session: Any = None

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
    serving = bundle.manifest.serving
    if options.request_graph and serving is not None and serving.graph == "request":
        return _load_request_shaped(name, bundle, serving, options)
    session = _session(bundle.onnx_path, options)
    _check_io(bundle, session)
    encoder = RequestEncoder(bundle.encoder, options.item_cache_size)
    model = LoadedModel(name, bundle, session, encoder, datetime.now(UTC))
    _warm_up(model)
    return model


def _session(path: Path, options: LoadOptions) -> Any:
    try:
        return make_session(path, options)
    except BundleError:
        raise
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for corrupt graphs
        raise BundleError(f"{path}: ONNX Runtime cannot load it: {error}") from None


def _load_request_shaped(
    name: str, bundle: Bundle, serving: ServingGraphs, options: LoadOptions
) -> LoadedModel:
    """A bundle served by its item graph (in the encoder) and its request graph (fp32 or int8)."""
    int8 = options.int8 and serving.int8 is not None and serving.int8.usable
    head_path = bundle.path / (INT8_ONNX if int8 else REQUEST_ONNX)
    items, head = _session(bundle.path / ITEMS_ONNX, options), _session(head_path, options)
    types = {f.name: _ORT_TYPES[f.role] for f in bundle.encoder.layout.fields}
    _expect_io(bundle.path / ITEMS_ONNX, items, {n: types[n] for n in serving.item_inputs}, ITEM_PART)
    wanted = {n: types[n] for n in serving.shared_inputs} | {ITEM_PART: "tensor(float)"}
    _expect_io(head_path, head, wanted, OUTPUT)
    if sorted([*serving.shared_inputs, *serving.item_inputs]) != sorted(types):
        raise BundleError(f"{bundle.path}: the request graphs' inputs are not the encoder's fields")
    item_inputs = list(serving.item_inputs)

    def item_tower(encoded: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = items.run([ITEM_PART], {n: encoded[n] for n in item_inputs})[0]
        return out

    encoder = RequestEncoder(bundle.encoder, options.item_cache_size, item_tower)
    graph = "request-int8" if int8 else "request"
    model = LoadedModel(name, bundle, head, encoder, datetime.now(UTC), graph, items)
    _warm_up(model)
    return model


def _expect_io(
    path: Path, session: Any, inputs: Mapping[str, str], output: str, against: str = "the manifest's"
) -> None:
    actual = {i.name: i.type for i in session.get_inputs()}
    if actual != dict(inputs):
        raise BundleError(
            f"{path}: graph inputs {sorted(actual.items())} differ from {against} "
            f"{sorted(inputs.items())} (schema mismatch)"
        )
    outputs = [o.name for o in session.get_outputs()]
    if output not in outputs:
        raise BundleError(f"{path}: no output named {output!r} (outputs: {outputs})")


def _check_io(bundle: Bundle, session: Any) -> None:
    expected = {f.name: _ORT_TYPES[f.role] for f in bundle.encoder.layout.fields}
    _expect_io(bundle.onnx_path, session, expected, OUTPUT, against="the encoder's layout")


def _warm_up(model: LoadedModel) -> None:
    inputs = model.bundle.encoder.transform({}, 2)
    try:
        tower = model.encoder.item_tower
        if tower is not None:
            shared = {spec.name for spec in model.encoder.shared}
            part = tower({name: column for name, column in inputs.items() if name not in shared})
            inputs = {name: inputs[name][:1] for name in shared} | {ITEM_PART: part}
        ctr = model.run(inputs)
    except Exception as error:  # noqa: BLE001 - any runtime failure refuses the bundle
        raise BundleError(f"{model.bundle.onnx_path}: test run failed: {error}") from None
    if ctr.shape != (2,) or not np.isfinite(ctr).all() or (ctr < 0).any() or (ctr > 1).any():
        raise BundleError(f"{model.bundle.onnx_path}: test run gave {ctr!r}, not 2 probabilities")


VERSION_SEPARATOR = "@"


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"deepfm@3"`` -> (``deepfm``, ``3``); ``"deepfm"`` -> (``deepfm``, None): follow ``current``."""
    name, sep, version = ref.partition(VERSION_SEPARATOR)
    return name, (version if sep else None)


@dataclass
class ReloadReport:
    """What a reload did: models (re)loaded, unchanged, refused (with the reason) and removed.

    Entries name a flat bundle by its name and a version of a versioned model as ``name@version``;
    ``current`` is the serving version of every model after the reload.
    """

    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    current: dict[str, str] = field(default_factory=dict)


Versions = Mapping[str, LoadedModel]


class ModelRegistry:
    """The models a worker serves, by name (the subdirectory name under ``models_dir``), every kept
    version of each, and which version serves the plain name."""

    def __init__(self, models_dir: Path, options: LoadOptions) -> None:
        self.models_dir = models_dir
        self.options = options
        self.models: Mapping[str, LoadedModel] = {}
        self.versions: Mapping[str, Versions] = {}
        self._lock = threading.Lock()

    def get(self, ref: str) -> LoadedModel | None:
        """The model ``ref`` names: ``name`` (its current version) or ``name@version`` (pinned)."""
        name, version = split_ref(ref)
        if version is None:
            return self.models.get(name)
        return self.versions.get(name, {}).get(version)

    def default_name(self) -> str | None:
        """The first model by name (what serves when no experiment applies and none is configured)."""
        return min(self.models) if self.models else None

    def reload(self, keep: Collection[str] = ()) -> ReloadReport:
        """Load new or changed bundles from ``models_dir`` and swap them in.

        Args:
            keep: model references (``name`` or ``name@version``) that must not disappear (arms of stored
                experiments): when their directory is gone they keep serving and the reload reports them
                as refused.
        """
        with self._lock:
            report = ReloadReport()
            found = self._model_dirs()
            versions: dict[str, dict[str, LoadedModel]] = {}
            serving: dict[str, LoadedModel] = {}
            for name, path in found.items():
                loaded, current = self._load_model(name, path, report)
                if loaded:
                    versions[name] = loaded
                if current is not None:
                    serving[name] = current
            self._keep_gone(found, keep, versions, serving, report)
            report.current = {name: model.version for name, model in sorted(serving.items())}
            self._publish(self.versions, versions, serving)
            self.versions = versions
            self.models = serving
            return report

    def _model_dirs(self) -> dict[str, Path]:
        if not self.models_dir.is_dir():
            return {}
        return {
            p.name: p
            for p in sorted(self.models_dir.iterdir())
            if p.is_dir() and not p.name.startswith((".", "_")) and not p.name.endswith(".tmp")
        }

    def _load_model(
        self, name: str, path: Path, report: ReloadReport
    ) -> tuple[dict[str, LoadedModel], LoadedModel | None]:
        """Every version of one model directory, and the one that serves its plain name."""
        old_versions = self.versions.get(name, {})
        old_current = self.models.get(name)
        try:
            entries = list_versions(path)
            wanted = current_version(path)
        except BundleError as error:
            # a flat bundle with an unreadable manifest: refused, the loaded one keeps serving
            return self._refuse(name, error, report, old_versions, old_current)
        if not entries and not is_flat(path):
            if old_current is not None:
                gone = BundleError(f"{path}: no bundle")
                return self._refuse(name, gone, report, old_versions, old_current)
            return {}, None
        flat = is_flat(path)

        def label(version: str) -> str:
            return name if flat else f"{name}{VERSION_SEPARATOR}{version}"

        loaded: dict[str, LoadedModel] = {}
        for entry in entries:
            ref = label(entry.version)
            model = self._load_one(name, ref, entry.path, old_versions.get(entry.version), report)
            if model is not None and model.version != entry.version:
                report.refused[ref] = f"{entry.path}: its manifest says version {model.version!r}"
                model = old_versions.get(entry.version)
            if model is not None:
                loaded[entry.version] = model
        current = loaded.get(wanted) if wanted is not None else None
        if current is None:
            if wanted is not None and label(wanted) not in report.refused:
                report.refused[label(wanted)] = f"{path}: current points at {wanted!r}, which is not loaded"
            current = old_current
        for version, model in old_versions.items():
            if version not in loaded and model is current:
                loaded[version] = model  # the serving version stays reachable by its pin
        return loaded, current

    @staticmethod
    def _refuse(
        name: str, error: BundleError, report: ReloadReport, old: Versions, current: LoadedModel | None
    ) -> tuple[dict[str, LoadedModel], LoadedModel | None]:
        log.error("refused model %s: %s", name, error)
        MODEL_LOAD_FAILURES.labels(name).inc()
        report.refused[name] = str(error)
        return dict(old), current

    def _load_one(
        self, name: str, label: str, path: Path, old: LoadedModel | None, report: ReloadReport
    ) -> LoadedModel | None:
        try:
            if old is not None and old.bundle.path == path and read_manifest(path) == old.bundle.manifest:
                report.unchanged.append(label)
                return old
            model = load_model(name, path, self.options)
        except BundleError as error:
            log.error("refused bundle %s: %s", label, error)
            MODEL_LOAD_FAILURES.labels(name).inc()
            report.refused[label] = str(error)
            return old
        log.info("loaded model %s version %s from %s", name, model.version, path)
        report.loaded.append(label)
        return model

    def _keep_gone(
        self,
        found: Mapping[str, Path],
        keep: Collection[str],
        versions: dict[str, dict[str, LoadedModel]],
        serving: dict[str, LoadedModel],
        report: ReloadReport,
    ) -> None:
        """Models and pinned versions that vanished from disk: kept when experiments use them."""
        for name, old in self.models.items():
            if name in found:
                continue
            if name in keep:
                report.refused[name] = f"{old.bundle.path}: directory is gone but experiments use {name!r}"
                serving[name] = old
                versions.setdefault(name, {})[old.version] = old
            else:
                report.removed.append(name)
        for ref in keep:
            name, version = split_ref(ref)
            old_model = self.versions.get(name, {}).get(version or "")
            if version is None or old_model is None or version in versions.get(name, {}):
                continue
            report.refused[ref] = f"{old_model.bundle.path}: version is gone but experiments pin {ref!r}"
            versions.setdefault(name, {})[version] = old_model

    def refresh_gauges(self) -> None:
        """Publish the age of every serving version and the outcome of each model's last retrain."""
        now = datetime.now(UTC)
        for name, model in self.models.items():
            MODEL_AGE.labels(name).set((now - model.bundle.manifest.created_at).total_seconds())
            publish_retrain_status(name, self.models_dir / name)

    def _publish(
        self, old: Mapping[str, Versions], new: Mapping[str, Versions], serving: Mapping[str, LoadedModel]
    ) -> None:
        kept = {id(model) for models in new.values() for model in models.values()}
        for name, models in old.items():
            for model in models.values():
                if id(model) not in kept:
                    model.encoder.flush_metrics()
                MODEL_LOADED.labels(name, model.version).set(0)
        for name, model in serving.items():
            MODEL_LOADED.labels(name, model.version).set(1)
        self.models = serving
        self.refresh_gauges()
