"""Request-shaped graphs: the item tower + request head reproduce the plain model for every eligible model.

In torch on the mixed schema (every input role, calibrated), then through ONNX on real frappe_ctr rows
grouped into requests (rows of one user and context), with the export's own parity check; the int8
gate refuses a graph that does not rank like fp32 or whose head is not faster than fp32's where the
export timed them, and the export falls back to the plain graph when the request graphs disagree with it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import model.export as export
import model.serving_graphs as serving_graphs
from model.bundle import INT8_ONNX, ITEMS_ONNX, REQUEST_ONNX, Int8Report
from model.encoder import Encoded, FeatureEncoder
from model.export import export_onnx, export_serving_graphs, torch_ctr
from model.fitting import fit_encoder
from model.nets import REGISTRY, build_model
from model.nets.calibration import PlattScaled
from model.nets.request import ItemTower, RequestHead, Sides, why_not_splittable
from model.schema import FeatureSchema, Source
from model.serving_graphs import (
    RequestScorer,
    group_requests,
    int8_gate,
    int8_verdict,
    quantize_request,
)

SCHEMA = Path(__file__).resolve().parents[2] / "configs" / "schemas" / "frappe_ctr.yaml"
PLAIN_ONLY = {"xdeepfm", "autoint", "dcnv2"}
ELIGIBLE = sorted(set(REGISTRY) - PLAIN_ONLY)
REAL_ROWS = 3_000


def _perturbed(name: str, encoder: FeatureEncoder, seed: int = 3) -> torch.nn.Module:
    """A calibrated model with non-trivial weights and batch-norm statistics."""
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


def _sides(schema: FeatureSchema, encoder: FeatureEncoder) -> Sides:
    return Sides(encoder.layout, frozenset(s.name for s in schema.fields if s.source is not Source.ITEM))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_split_equals_the_model_in_torch(
    name: str, mixed_schema: FeatureSchema, mixed_encoder: FeatureEncoder, mixed_rows: Encoded
) -> None:
    model, sides = _perturbed(name, mixed_encoder), _sides(mixed_schema, mixed_encoder)
    reason = why_not_splittable(model, sides)
    assert (reason is not None) == (name in PLAIN_ONLY), reason
    if reason is not None:
        return
    tower, head = ItemTower(model, sides).eval(), RequestHead(model, sides).eval()
    rows = len(mixed_rows["user"])
    with torch.no_grad():
        part = tower(*(torch.from_numpy(mixed_rows[n]) for n in sides.names(False)))
        for user in (0, 1, 2):  # one user + context with every row's item as a candidate
            shared = [torch.from_numpy(mixed_rows[n][user : user + 1]) for n in sides.names(True)]
            got = head(*shared, part).numpy()
            request = {
                k: np.repeat(v[user : user + 1], rows, axis=0) if k in sides.shared else v
                for k, v in mixed_rows.items()
            }
            expected = torch_ctr(model, mixed_encoder.layout, request)
            assert expected.std() > 1e-4
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def _real_rows() -> dict[str, np.ndarray]:
    from tests.conftest import data_root, require

    path = data_root() / "frappe_ctr" / "valid.csv"
    require(path.is_file(), f"the shared datasets at {path.parent}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for _, row in zip(range(REAL_ROWS), reader, strict=False)]
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


@pytest.fixture(scope="module")
def frappe() -> tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray]:
    schema = FeatureSchema.load(SCHEMA)
    columns = _real_rows()
    encoder = fit_encoder(schema, columns)
    labels = columns.pop("label").astype(np.float32)
    return schema, encoder, encoder.transform(columns, len(labels)), labels


@pytest.mark.parametrize("name", ELIGIBLE)
def test_request_graphs_match_the_plain_graph_on_real_requests(
    name: str, frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray], tmp_path: Path
) -> None:
    schema, encoder, rows, _ = frappe
    model = _perturbed(name, encoder)
    export_onnx(model, encoder.layout, rows, tmp_path / "model.onnx")
    report = export_serving_graphs(model, encoder.layout, schema, rows, tmp_path, int8=False)
    assert report.graph == "request", report.reason
    assert report.parity is not None and report.parity.passed and report.parity.rows == REAL_ROWS
    assert report.parity.max_abs_diff <= 1e-5
    assert 1 < report.requests < REAL_ROWS  # rows of one user and context were scored as one request
    assert report.shared_inputs == [s.name for s in schema.fields if s.source is not Source.ITEM]
    assert (tmp_path / ITEMS_ONNX).is_file() and (tmp_path / REQUEST_ONNX).is_file()


def test_plain_only_models_say_why(
    frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray], tmp_path: Path
) -> None:
    schema, encoder, rows, _ = frappe
    report = export_serving_graphs(_perturbed("xdeepfm", encoder), encoder.layout, schema, rows, tmp_path)
    assert report.graph == "plain" and report.reason is not None and "cin" in report.reason
    assert not (tmp_path / ITEMS_ONNX).exists()


def test_requests_group_rows_of_one_user_and_context(
    frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray],
) -> None:
    schema, _, rows, _ = frappe
    shared = [s.name for s in schema.fields if s.source is not Source.ITEM]
    requests = group_requests(rows, shared)
    assert sorted(np.concatenate(requests).tolist()) == list(range(REAL_ROWS))
    for members in requests[:50]:
        for name in shared:
            assert np.unique(rows[name][members]).size == 1


def test_export_falls_back_to_plain_when_request_parity_fails(
    frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema, encoder, rows, _ = frappe
    model, other = _perturbed("deepfm", encoder), _perturbed("deepfm", encoder, seed=4)
    export_onnx(model, encoder.layout, rows, tmp_path / "model.onnx")
    real = export.export_request_graphs
    monkeypatch.setattr(export, "export_request_graphs", lambda m, *a: real(other, *a))
    report = export_serving_graphs(model, encoder.layout, schema, rows, tmp_path, int8=False)
    assert report.graph == "plain" and report.reason is not None and "parity" in report.reason
    assert report.parity is not None and not report.parity.passed
    assert not (tmp_path / ITEMS_ONNX).exists() and not (tmp_path / REQUEST_ONNX).exists()


def test_int8_gate_passes_int8_of_the_model_and_refuses_a_damaged_one(
    frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray], tmp_path: Path
) -> None:
    schema, encoder, rows, labels = frappe
    model = _perturbed("deepfm", encoder)
    sides = _sides(schema, encoder)
    export.export_request_graphs(model, sides, rows, tmp_path)
    scorer = RequestScorer(
        tmp_path / ITEMS_ONNX, tmp_path / REQUEST_ONNX, sides.names(True), sides.names(False)
    )
    good = int8_gate(scorer, quantize_request(tmp_path / REQUEST_ONNX, tmp_path), rows, labels)
    assert good.auc_fp32 is not None and good.auc_int8 is not None and good.requests == 1_000
    assert good.top10_agreement is not None and good.top10_agreement > 0.5
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    export.export_request_graphs(_perturbed("deepfm", encoder, seed=9), sides, rows, damaged_dir)
    damaged = int8_gate(scorer, quantize_request(damaged_dir / REQUEST_ONNX, damaged_dir), rows, labels)
    assert not damaged.usable and damaged.top10_agreement is not None and damaged.top10_agreement < 0.5
    assert "top-10" in damaged.reason or "AUC" in damaged.reason


def test_export_records_a_refused_int8_graph_and_removes_it(
    frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema, encoder, rows, labels = frappe
    model = _perturbed("deepfm", encoder)
    export_onnx(model, encoder.layout, rows, tmp_path / "model.onnx")
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    export.export_request_graphs(
        _perturbed("deepfm", encoder, seed=9), _sides(schema, encoder), rows, damaged_dir
    )
    monkeypatch.setattr(
        export,
        "quantize_request",
        lambda request, out, feeds=None: quantize_request(damaged_dir / REQUEST_ONNX, out, feeds),
    )
    report = export_serving_graphs(model, encoder.layout, schema, rows, tmp_path, (rows, labels))
    assert report.graph == "request" and report.int8 is not None
    assert not report.int8.usable and report.int8.sha256 is None and report.int8.reason
    assert not (tmp_path / INT8_ONNX).exists()


TIMED = {"speed_candidates": [100, 1_000], "fp32_ms": [0.8, 7.0]}


@pytest.mark.parametrize(
    ("figures", "usable", "says"),
    [
        ({}, True, "speed not measured"),
        ({**TIMED, "int8_ms": [0.4, 3.0]}, True, "int8 head N=100: 0.4 vs 0.8 ms"),
        ({**TIMED, "int8_ms": [0.4, 7.5]}, False, "not faster"),
        ({**TIMED, "int8_ms": [0.8, 3.0]}, False, "not faster"),  # a tie is no gain
        ({**TIMED, "int8_ms": [0.4, 3.0], "auc_int8": 0.9006}, False, "AUC"),
        ({"auc_int8": float("nan")}, False, "AUC"),
        ({**TIMED, "int8_ms": [0.4, 3.0], "top10_agreement": 0.989}, False, "top-10"),
        ({"top10_agreement": None}, False, "not checked"),
    ],
)
def test_int8_verdict_needs_both_quality_bars_and_a_gain_where_timed(
    figures: dict[str, Any], usable: bool, says: str
) -> None:
    checked = Int8Report(
        usable=not usable, reason="", auc_fp32=0.9, auc_int8=0.9002, auc_rows=1_000,
        top10_agreement=0.995, requests=1_000,
    ).model_copy(update=figures)  # fmt: skip
    verdict = int8_verdict(checked)
    assert verdict.usable is usable and says in verdict.reason, verdict.reason


def test_int8_gate_times_the_heads_where_quality_holds_and_refuses_a_slower_int8(
    frappe: tuple[FeatureSchema, FeatureEncoder, Encoded, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema, encoder, rows, labels = frappe
    sides = _sides(schema, encoder)
    export.export_request_graphs(_perturbed("deepfm", encoder), sides, rows, tmp_path)
    scorer = RequestScorer(
        tmp_path / ITEMS_ONNX, tmp_path / REQUEST_ONNX, sides.names(True), sides.names(False)
    )
    quantized = quantize_request(tmp_path / REQUEST_ONNX, tmp_path)
    monkeypatch.setattr(serving_graphs, "AUC_SLACK", 1.0)  # quality holds: the speed decides
    monkeypatch.setattr(serving_graphs, "TOP10_AGREEMENT", 0.0)
    monkeypatch.setattr(serving_graphs, "GATE_REQUESTS", 50)  # the bars' figures are not the point here
    monkeypatch.setattr(serving_graphs, "SPEED_ROUNDS", 2)
    timed = int8_gate(scorer, quantized, rows, labels)  # the real probe: the decision follows its figures
    assert timed.speed_candidates == [100, 1_000] and len(timed.fp32_ms) == len(timed.int8_ms) == 2
    assert min(timed.fp32_ms + timed.int8_ms) > 0
    assert timed.usable == all(i < f for f, i in zip(timed.fp32_ms, timed.int8_ms, strict=True))
    slower = int8_gate(scorer, quantized, rows, labels, lambda *_: ([100], [1.0], [1.2]))
    assert not slower.usable and "not faster" in slower.reason and slower.int8_ms == [1.2]
    monkeypatch.setattr(serving_graphs, "TOP10_AGREEMENT", 1.01)  # quality fails: no timing at all
    refused = int8_gate(scorer, quantized, rows, labels, lambda *_: pytest.fail("timed"))
    assert not refused.usable and "top-10" in refused.reason and refused.int8_ms == []
