"""Model bundles: a self-contained directory that training writes and the service loads.

Layout::

    manifest.json   what this is (model, version, hashes, metrics, parity), see ``Manifest``
    schema.json     the FeatureSchema
    encoder.json    the fitted FeatureEncoder state
    model.onnx      the scoring graph: one input per field (named after it), output ``ctr`` [B]
    model.items.onnx    optional, request-shaped models: item fields [N, ...] -> ``item_part`` [N, P]
    model.request.onnx  optional: user/context fields [1, ...] + ``item_part`` [N, P] -> ``ctr`` [N]
    model.int8.onnx     optional: model.request.onnx with its matrix products quantized to int8
    metrics.json    evaluation metrics per split
    weights.pt      torch weights for resuming training (ignored by the service)

``read_bundle`` checks everything the service relies on before a bundle can serve: the files exist, the
three schema hashes agree, the ONNX file's sha256 is the one recorded, and the parity check passed.
No torch here: the service imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from model import __version__
from model.encoder import FeatureEncoder
from model.schema import FeatureSchema

MANIFEST = "manifest.json"
SCHEMA = "schema.json"
ENCODER = "encoder.json"
ONNX = "model.onnx"
METRICS = "metrics.json"
WEIGHTS = "weights.pt"
ITEMS_ONNX = "model.items.onnx"
REQUEST_ONNX = "model.request.onnx"
INT8_ONNX = "model.int8.onnx"
ITEM_PART = "item_part"
FORMAT_VERSION = 1


class BundleError(Exception):
    """A bundle cannot be written or loaded; the message says which file and why."""


class ParityReport(BaseModel):
    """ONNX Runtime vs PyTorch on the same encoded rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    max_abs_diff: float
    tolerance: float
    passed: bool


class Int8Report(BaseModel):
    """The int8 request graph against fp32: whether it may serve, and the figures that decided it.

    ``usable`` needs the quality bars (test AUC, top-10 agreement) and, where the export timed the two
    request heads (``speed_candidates``, medians ``fp32_ms`` / ``int8_ms``), int8 faster at every size.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    usable: bool
    reason: str
    method: str = "dynamic"
    sha256: str | None = None
    auc_fp32: float | None = None
    auc_int8: float | None = None
    auc_rows: int = 0
    top10_agreement: float | None = None
    requests: int = 0
    speed_candidates: list[int] = []
    fp32_ms: list[float] = []
    int8_ms: list[float] = []


class ServingGraphs(BaseModel):
    """Which graphs a bundle serves with: ``plain`` (model.onnx only) or ``request`` (items + request).

    ``reason`` says why a model keeps the plain graph; ``parity`` compares the request-shaped CTRs with
    the plain graph's on real rows grouped into requests (``rows`` counts the candidates scored).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    graph: Literal["plain", "request"]
    reason: str | None = None
    shared_inputs: list[str] = []
    item_inputs: list[str] = []
    item_part_width: int = 0
    requests: int = 0
    parity: ParityReport | None = None
    items_sha256: str | None = None
    request_sha256: str | None = None
    int8: Int8Report | None = None


class Manifest(BaseModel):
    """What a bundle is; ``manifest.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str
    model: str
    version: str
    created_at: datetime
    schema_hash: str
    data_fingerprint: str
    onnx_sha256: str
    opset: int
    inputs: list[str]
    output: str = "ctr"
    parity: ParityReport
    metrics: dict[str, dict[str, float]]
    hyperparameters: dict[str, Any]
    package_version: str = __version__
    serving: ServingGraphs | None = None


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle (without its ONNX session: that belongs to the caller)."""

    path: Path
    manifest: Manifest
    schema: FeatureSchema
    encoder: FeatureEncoder

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_version(now: datetime | None = None) -> str:
    """A sortable version string from the UTC time, e.g. ``20261124.040512``."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d.%H%M%S")


def write_bundle(
    out: Path, manifest: Manifest, schema: FeatureSchema, encoder: FeatureEncoder, staging: Path
) -> Path:
    """Assemble a bundle at ``out`` from ``staging`` (which already holds model.onnx and weights).

    The directory appears atomically: everything is written in ``staging`` and then renamed, so a
    service watching ``out``'s parent never sees half a bundle. When ``out`` is a versioned model
    directory (``model.versions``), the bundle is published there as a new, current version.
    """
    if manifest.schema_hash != schema.content_hash():
        raise BundleError("manifest schema_hash differs from the schema's content hash")
    if not manifest.parity.passed:
        raise BundleError(
            f"parity check failed: max |ctr_onnx - ctr_torch| = {manifest.parity.max_abs_diff:.3g} "
            f"> {manifest.parity.tolerance:g}"
        )
    schema.save(staging / SCHEMA)
    encoder.save(staging / ENCODER)
    (staging / METRICS).write_text(json.dumps(manifest.metrics, indent=2, sort_keys=True) + "\n")
    (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    if (out / "current").is_file():
        # a versioned model directory (model.versions): add a version, never replace the history
        from model.versions import publish

        return publish(out, staging, manifest.version)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out)
    return out


def read_manifest(path: Path) -> Manifest:
    """The manifest of the bundle at ``path``, validated."""
    file = path / MANIFEST
    try:
        return Manifest.model_validate_json(file.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{file}: missing") from None
    except ValidationError as error:
        raise BundleError(f"{file}: invalid manifest: {error.errors()[0]['msg']}") from None


def read_bundle(path: Path, *, verify_onnx: bool = True) -> Bundle:
    """Load and verify a bundle directory.

    Raises:
        BundleError: a file is missing or corrupt, the hashes disagree, or parity did not pass.
    """
    manifest = read_manifest(path)
    for name in (SCHEMA, ENCODER, ONNX):
        if not (path / name).is_file():
            raise BundleError(f"{path / name}: missing")
    try:
        schema = FeatureSchema.load(path / SCHEMA)
        encoder = FeatureEncoder.load(schema, path / ENCODER)
    except (ValueError, ValidationError) as error:
        raise BundleError(f"{path}: cannot read schema or encoder: {error}") from None
    if schema.content_hash() != manifest.schema_hash:
        raise BundleError(f"{path / SCHEMA}: schema hash differs from the manifest's (schema mismatch)")
    if not manifest.parity.passed:
        raise BundleError(f"{path}: the ONNX parity check did not pass at export")
    if verify_onnx and sha256_file(path / ONNX) != manifest.onnx_sha256:
        raise BundleError(f"{path / ONNX}: sha256 differs from the manifest's (corrupt or replaced file)")
    if verify_onnx:
        _verify_serving_graphs(path, manifest.serving)
    return Bundle(path=path, manifest=manifest, schema=schema, encoder=encoder)


def _verify_serving_graphs(path: Path, serving: ServingGraphs | None) -> None:
    """The request-shaped graphs the manifest names exist, passed parity and have their recorded hashes."""
    if serving is None or serving.graph == "plain":
        return
    if serving.parity is None or not serving.parity.passed:
        raise BundleError(f"{path}: the request graph's parity check did not pass at export")
    files = [(ITEMS_ONNX, serving.items_sha256), (REQUEST_ONNX, serving.request_sha256)]
    if serving.int8 is not None and serving.int8.sha256 is not None:
        files.append((INT8_ONNX, serving.int8.sha256))
    for name, digest in files:
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: missing")
        if sha256_file(file) != digest:
            raise BundleError(f"{file}: sha256 differs from the manifest's (corrupt or replaced file)")
