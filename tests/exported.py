"""One exported bundle per registered model, made once per session and shared by the export and serving tests.

Every model of the registry is built over the Frappe schema, with an encoder fitted on real frappe_ctr rows
and on the service tests' synthetic rows (so that both kinds of request encode to known values), given
non-trivial weights, batch-norm statistics and Platt scaling (``perturbed``), exported by the real exporter
on the real rows (the plain graph and its parity check, then the request-shaped graphs with their parity
check where the model splits, and for ``INT8_MODELS`` the int8 graph with its gate on the real labels) and
written with ``model.bundle.write_bundle``. A bundle is exported the first time a test asks for it, so a
file run alone exports only what it uses; ``tests/model/test_request_graph.py`` checks the export reports,
``tests/service/test_model_family_serving.py`` and ``test_request_graph_serving.py`` serve copies.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.bundle import ONNX, Manifest, sha256_file, write_bundle
from model.encoder import Encoded, FeatureEncoder
from model.fitting import fit_encoder
from model.schema import FeatureSchema
from tests.conftest import data_root, require
from tests.service.bundles import FRAPPE_SCHEMA, synthetic_rows

if TYPE_CHECKING:
    from torch import nn

REAL_ROWS = 3_000  # the first rows of frappe_ctr's validation split: the export sample and the gate's rows
VERSION = "20260701.000000"
INT8_MODELS = frozenset({"deepfm"})  # the int8 graph is served by test_request_graph_serving for deepfm


def perturbed(name: str, encoder: FeatureEncoder, seed: int = 3) -> nn.Module:
    """A calibrated model with non-trivial weights and batch-norm statistics (every row scores apart)."""
    import torch

    from model.nets import build_model
    from model.nets.calibration import PlattScaled

    torch.manual_seed(seed)
    model = build_model(name, encoder.layout)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return PlattScaled(model.eval(), 1.3, -0.2).eval()


def real_rows(rows: int = REAL_ROWS) -> dict[str, np.ndarray]:
    """The first ``rows`` rows of frappe_ctr's validation split as raw columns (``label`` included)."""
    path = data_root() / "frappe_ctr" / "valid.csv"
    require(path.is_file(), f"the shared datasets at {path.parent}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        kept = [row for _, row in zip(range(rows), reader, strict=False)]
    return {name: np.array([row[name] for row in kept]) for name in kept[0]}


@dataclass
class ExportedFamily:
    """The shared bundles under ``root`` (``root/<model>``), and what they were exported with."""

    root: Path
    schema: FeatureSchema
    encoder: FeatureEncoder
    rows: Encoded  # the real rows, encoded: the export sample
    labels: np.ndarray

    @classmethod
    def create(cls, root: Path) -> ExportedFamily:
        schema = FeatureSchema.load(FRAPPE_SCHEMA)
        columns = real_rows()
        labels = columns.pop("label").astype(np.float32)
        synthetic = synthetic_rows()
        both = {name: np.concatenate([columns[name], synthetic[name]]) for name in schema.names}
        encoder = fit_encoder(schema, both)
        return cls(root, schema, encoder, encoder.transform(columns, len(labels)), labels)

    def bundle(self, name: str) -> Path:
        """The bundle of ``name`` (exported now if no test asked for it before)."""
        if not (self.root / name).is_dir():  # write_bundle moves a complete bundle into place, or nothing
            self._export(name)
        return self.root / name

    def models_dir(self, names: list[str] | tuple[str, ...], out: Path) -> Path:
        """A models directory at ``out`` holding copies of the bundles of ``names``."""
        for name in names:
            shutil.copytree(self.bundle(name), out / name)
        return out

    def _export(self, name: str) -> None:
        int8 = name in INT8_MODELS
        write_exported_bundle(
            name, perturbed(name, self.encoder), self.encoder, self.rows, self.root / name,
            (self.rows, self.labels) if int8 else None, "frappe_ctr valid + synthetic", int8=int8,
        )  # fmt: skip


def write_exported_bundle(
    name: str, model: nn.Module, encoder: FeatureEncoder, rows: Encoded, out: Path,
    test: tuple[Encoded, np.ndarray] | None, fingerprint: str, *, int8: bool = True, version: str = VERSION,
) -> None:  # fmt: skip
    """Export ``model`` as the exporter does (plain graph and its parity check, then the request graphs
    and the int8 gate on ``test``) and write its bundle to ``out`` (moved into place whole)."""
    from model.export import OPSET, export_onnx, export_serving_graphs, parity_check

    schema, layout = encoder.schema, encoder.layout
    staging = out.parent / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)  # left by an export that failed
    staging.mkdir(parents=True)
    export_onnx(model, layout, rows, staging / ONNX)
    parity = parity_check(model, layout, rows, staging / ONNX)
    assert parity.passed, parity
    serving = export_serving_graphs(model, layout, schema, rows, staging, test, int8=int8)
    manifest = Manifest(
        name=name, model=name, version=version, created_at=datetime.now(UTC),
        schema_hash=schema.content_hash(), data_fingerprint=fingerprint,
        onnx_sha256=sha256_file(staging / ONNX), opset=OPSET, inputs=list(schema.names),
        parity=parity, metrics={}, hyperparameters={"model": name}, serving=serving,
    )  # fmt: skip
    write_bundle(out, manifest, schema, encoder, staging)
