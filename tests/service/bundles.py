"""Test bundles: an LR-like ONNX graph built with ``onnx.helper`` over a real fitted encoder.

``ctr = sigmoid(bias + sum_f w_f[index_f])`` (bags sum their indices' weights, values are scaled), with
weights the test controls, and ``lr_ctr`` computes the same thing in numpy as the oracle. Until the real
exporter exists these stand in for trained bundles; ``write_lr_bundle`` writes them with
``model.bundle.write_bundle`` exactly as training will.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from model.bundle import ONNX, Manifest, ParityReport, sha256_file, write_bundle
from model.encoder import Encoded, FeatureEncoder, InputRole
from model.fitting import fit_encoder
from model.schema import FeatureSchema, Source

REPO = Path(__file__).resolve().parents[2]
FRAPPE_SCHEMA = REPO / "configs" / "schemas" / "frappe_ctr.yaml"
Weights = dict[str, npt.NDArray[np.float32]]

CONTEXT_VALUES = {
    "daytime": ["morning", "afternoon", "evening", "night"],
    "weekday": ["monday", "tuesday", "sunday"],
    "isweekend": ["workday", "weekend"],
    "homework": ["home", "work", "unknown"],
    "weather": ["sunny", "rainy", "unknown"],
    "country": ["United States", "Spain", "Germany"],
    "city": ["0", "1", "2"],
}
ITEM_VALUES = {
    "cost": ["free", "paid"],
    "category": ["Tools", "Games", "Education", "Social"],
    "downloads": ["1,000 - 5,000", "50,000 - 100,000"],
    "developer": ["Acme", "BlueApp", "Softonic"],
    "language": ["en", "es"],
    "price": ["Free", "$0.99"],
    "rating": ["4.5", "3.9", "unknown"],
}


def frappe_schema() -> FeatureSchema:
    return FeatureSchema.load(FRAPPE_SCHEMA)


def item_features(app: int) -> dict[str, str]:
    """Deterministic item features of app ``a<app>``."""
    return {
        name: values[(app * (i + 3)) % len(values)] for i, (name, values) in enumerate(ITEM_VALUES.items())
    }


def synthetic_rows(users: int = 40, apps: int = 120) -> dict[str, npt.NDArray[Any]]:
    """Frappe-shaped raw columns: every user, app and context value appears."""
    rows = max(users, apps) * 3
    columns: dict[str, list[str]] = {name: [] for name in frappe_schema().names}
    for r in range(rows):
        columns["user"].append(str(r % users))
        columns["item"].append(f"a{r % apps}")
        for i, (name, values) in enumerate(CONTEXT_VALUES.items()):
            columns[name].append(values[(r + i) % len(values)])
        for name, value in item_features(r % apps).items():
            columns[name].append(value)
    return {name: np.array(values) for name, values in columns.items()}


def fit_frappe_encoder() -> FeatureEncoder:
    return fit_encoder(frappe_schema(), synthetic_rows())


def random_weights(encoder: FeatureEncoder, seed: int = 0, scale: float = 0.5) -> Weights:
    """Random weights per field (index 0, missing/padding, weighs 0 in bags)."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for field in encoder.layout.fields:
        w = (rng.standard_normal(field.cardinality) * scale).astype(np.float32)
        if field.role is InputRole.BAG:
            w[0] = 0.0
        weights[field.name] = w
    return weights


def lr_graph(encoder: FeatureEncoder, weights: Weights, bias: float) -> onnx.ModelProto:
    """The scoring graph: one input per field (named after it), output ``ctr`` [B]."""
    inputs, nodes, inits, terms = [], [], [], []
    for field in encoder.layout.fields:
        name = field.name
        inits.append(numpy_helper.from_array(weights[name], f"w_{name}"))
        if field.role is InputRole.VALUE:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B"]))
            nodes.append(helper.make_node("Gather", [f"w_{name}", "zero"], [f"s_{name}"]))
            nodes.append(helper.make_node("Mul", [name, f"s_{name}"], [f"t_{name}"]))
        elif field.role is InputRole.BAG:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["B", field.max_len]))
            nodes.append(helper.make_node("Gather", [f"w_{name}", name], [f"g_{name}"]))
            nodes.append(helper.make_node("ReduceSum", [f"g_{name}", "axis1"], [f"t_{name}"], keepdims=0))
        else:
            inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, ["B"]))
            nodes.append(helper.make_node("Gather", [f"w_{name}", name], [f"t_{name}"]))
        terms.append(f"t_{name}")
    roles = {f.role for f in encoder.layout.fields}
    if InputRole.VALUE in roles:
        inits.append(numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"))
    if InputRole.BAG in roles:
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    inits.append(numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias"))
    nodes.append(helper.make_node("Sum", terms, ["logit_raw"]))
    nodes.append(helper.make_node("Add", ["logit_raw", "bias"], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["ctr"]))
    output = helper.make_tensor_value_info("ctr", TensorProto.FLOAT, ["B"])
    graph = helper.make_graph(nodes, "lr", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def lr_ctr(
    encoded: Encoded, encoder: FeatureEncoder, weights: Weights, bias: float
) -> npt.NDArray[np.float32]:
    """The numpy oracle of ``lr_graph`` on encoded inputs."""
    logit = np.full(next(iter(encoded.values())).shape[0], bias, dtype=np.float64)
    for field in encoder.layout.fields:
        w, x = weights[field.name].astype(np.float64), encoded[field.name]
        if field.role is InputRole.VALUE:
            logit += w[0] * x
        elif field.role is InputRole.BAG:
            logit += w[x].sum(axis=1)
        else:
            logit += w[x]
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def write_lr_bundle(
    out: Path,
    encoder: FeatureEncoder,
    weights: Weights,
    bias: float = 0.0,
    version: str = "20260101.000000",
    name: str = "lr",
) -> Path:
    """Write a complete, verifiable bundle at ``out`` (built in a staging directory beside it)."""
    staging = out.parent / f".staging-{out.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    onnx.save(lr_graph(encoder, weights, bias), str(staging / ONNX))
    manifest = Manifest(
        name=name,
        model="lr",
        version=version,
        created_at=datetime.now(UTC),
        schema_hash=encoder.schema.content_hash(),
        data_fingerprint="synthetic",
        onnx_sha256=sha256_file(staging / ONNX),
        opset=17,
        inputs=list(encoder.schema.names),
        parity=ParityReport(rows=0, max_abs_diff=0.0, tolerance=1e-5, passed=True),
        metrics={"test": {"auc": 0.5}},
        hyperparameters={"bias": bias},
    )
    return write_bundle(out, manifest, encoder.schema, encoder, staging)


def item_weights_for_order(encoder: FeatureEncoder, apps: list[str], logits: list[float]) -> Weights:
    """Zero weights everywhere except the ``item`` field, where app ``apps[i]`` gets ``logits[i]``."""
    weights = {f.name: np.zeros(f.cardinality, dtype=np.float32) for f in encoder.layout.fields}
    codes = encoder.transform({"item": np.array(apps)}, len(apps))["item"]
    weights["item"][codes] = np.array(logits, dtype=np.float32)
    return weights


def shared_source_names(schema: FeatureSchema) -> list[str]:
    return [f.name for f in schema.fields if f.source is not Source.ITEM]
