"""ONNX export with a parity check: the scoring graph the service runs. Imports torch and onnxruntime.

The exported graph takes one input per schema field, named after it (the arrays ``FeatureEncoder.
transform`` returns), and outputs ``ctr`` [B] = sigmoid(logit). Export is refused unless ONNX Runtime
and PyTorch agree on the CTR of the given rows within the tolerance.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from model.bundle import (
    INT8_ONNX,
    ITEM_PART,
    ITEMS_ONNX,
    ONNX,
    REQUEST_ONNX,
    ParityReport,
    ServingGraphs,
    sha256_file,
)
from model.encoder import Encoded, InputLayout, group_by_role
from model.nets.blocks import ModelBatch
from model.nets.request import ItemTower, RequestHead, Sides, unwrap, why_not_splittable
from model.schema import FeatureSchema, Source
from model.serving_graphs import (
    RequestScorer,
    calibration_feeds,
    int8_gate,
    quantize_request,
    request_parity,
)

OPSET = 18
PARITY_ROWS = 10_000
PARITY_TOLERANCE = 1e-5
INT8_METHOD = "dynamic"  # or "static" (calibrated on validation rows): bench/request_graph_bench.py compares
log = logging.getLogger(__name__)


def model_batch(encoded: Encoded, layout: InputLayout) -> ModelBatch:
    """Group the encoder's per-field arrays into a ``ModelBatch`` of torch tensors."""
    idx, val, bags = layout.stacked(encoded, len(next(iter(encoded.values()))))
    return ModelBatch(
        idx=torch.from_numpy(idx), val=torch.from_numpy(val), bags=tuple(map(torch.from_numpy, bags))
    )


class ScoringGraph(nn.Module):
    """Wraps a model: per-field inputs (layout order) -> CTR [B]. This is what gets exported."""

    def __init__(self, model: nn.Module, layout: InputLayout) -> None:
        super().__init__()
        self.model = model
        self.roles = [f.role for f in layout.fields]

    def forward(self, *inputs: Tensor) -> Tensor:
        rows = inputs[0].shape[0]
        index, values, bags = group_by_role(inputs, self.roles)
        batch = ModelBatch(
            idx=torch.stack(index, dim=1) if index else inputs[0].new_zeros((rows, 0), dtype=torch.int64),
            val=torch.stack(values, dim=1) if values else inputs[0].new_zeros((rows, 0), dtype=torch.float32),
            bags=tuple(bags),
        )
        return torch.sigmoid(self.model(batch))


def _example_inputs(encoded: Encoded, layout: InputLayout) -> tuple[Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(encoded[f.name])) for f in layout.fields)


def export_onnx(model: nn.Module, layout: InputLayout, example: Encoded, path: Path) -> None:
    """Write the scoring graph of ``model`` (eval mode) as ONNX with a dynamic batch dimension."""
    names = [f.name for f in layout.fields]
    graph = ScoringGraph(model, layout)
    _export_graph(graph, _example_inputs(example, layout), names, [True] * len(names), "ctr", path, "batch")


def torch_ctr(
    model: nn.Module, layout: InputLayout, encoded: Encoded, batch_size: int = 65_536
) -> npt.NDArray[Any]:
    """CTR of every row by PyTorch, float32, in eval mode and full precision."""
    model.eval()
    batch = model_batch(encoded, layout)
    outputs = []
    with torch.no_grad():
        for start in range(0, batch.idx.shape[0], batch_size):
            part = ModelBatch(
                batch.idx[start : start + batch_size],
                batch.val[start : start + batch_size],
                tuple(b[start : start + batch_size] for b in batch.bags),
            )
            outputs.append(torch.sigmoid(model(part)).float().numpy())
    return np.concatenate(outputs)


def onnx_ctr(path: Path, encoded: Encoded) -> npt.NDArray[Any]:
    """CTR of every row by ONNX Runtime (CPU) from the file at ``path``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ascontiguousarray(encoded[i.name]) for i in session.get_inputs()}
    (ctr,) = session.run(["ctr"], feeds)
    return np.asarray(ctr)


def parity_check(
    model: nn.Module, layout: InputLayout, encoded: Encoded, path: Path, tolerance: float = PARITY_TOLERANCE
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch on ``encoded`` (use about PARITY_ROWS rows)."""
    expected = torch_ctr(model, layout, encoded)
    actual = onnx_ctr(path, encoded)
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    report = ParityReport(
        rows=int(expected.size), max_abs_diff=diff, tolerance=tolerance, passed=diff <= tolerance
    )
    log.info("onnx parity on %d rows: max |diff| = %.3g (tolerance %g)", report.rows, diff, tolerance)
    return report


def _export_graph(module: nn.Module, inputs: tuple[Tensor, ...], names: list[str], dynamic: list[bool],
                  output: str, path: Path, dim: str = "n") -> None:  # fmt: skip
    """Write ``module`` as ONNX; inputs marked ``dynamic`` get the batch dimension ``dim``, others stay 1."""
    rows = torch.export.Dim(dim, min=1)
    # the exporter warns about optional torchvision ops it skips; the passes narrate at INFO
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about axis renaming it handles itself
        program = torch.onnx.export(
            module.eval(),
            inputs,
            input_names=names,
            output_names=[output],
            dynamic_shapes=(tuple({0: rows} if d else {} for d in dynamic),),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def export_request_graphs(model: nn.Module, sides: Sides, example: Encoded, out_dir: Path) -> int:
    """Write ``model.items.onnx`` and ``model.request.onnx`` for a splittable model; the item part width."""
    tower, head = ItemTower(model, sides).eval(), RequestHead(model, sides).eval()
    shared, items = sides.names(True), sides.names(False)
    item_inputs = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in items)
    _export_graph(tower, item_inputs, items, [True] * len(items), ITEM_PART, out_dir / ITEMS_ONNX)
    with torch.no_grad():
        part = tower(*item_inputs)
    user = tuple(torch.from_numpy(np.ascontiguousarray(example[n][:1])) for n in shared)
    names = [*shared, ITEM_PART]
    _export_graph(head, (*user, part), names, [False] * len(shared) + [True], "ctr", out_dir / REQUEST_ONNX)
    return int(part.shape[1])


def export_serving_graphs(
    model: nn.Module,
    layout: InputLayout,
    schema: FeatureSchema,
    sample: Encoded,
    out_dir: Path,
    test: tuple[Encoded, npt.NDArray[Any]] | None = None,
    *,
    int8: bool = True,
    calibration: Encoded | None = None,
) -> ServingGraphs:
    """The request-shaped graphs beside ``out_dir/model.onnx`` (exported and parity-checked already).

    Falls back to the plain graph, saying why, when the model does not split or parity fails; the int8
    graph is written and gated on ``test`` (encoded rows, labels) when ``int8`` is set: quantized
    statically on ``calibration`` rows (validation rows) where ``INT8_METHOD`` says so, else dynamically.
    """
    sides = Sides(layout, frozenset(s.name for s in schema.fields if s.source is not Source.ITEM))
    reason = why_not_splittable(model, sides)
    if reason is not None:
        return ServingGraphs(graph="plain", reason=reason)
    width = export_request_graphs(model, sides, sample, out_dir)
    shared, items = sides.names(True), sides.names(False)
    scorer = RequestScorer(out_dir / ITEMS_ONNX, out_dir / REQUEST_ONNX, shared, items)
    parity, requests = request_parity(scorer, sample, onnx_ctr(out_dir / ONNX, sample), PARITY_TOLERANCE)
    if not parity.passed:
        for name in (ITEMS_ONNX, REQUEST_ONNX):
            (out_dir / name).unlink(missing_ok=True)
        why = f"request graph parity failed: max |diff| {parity.max_abs_diff:.3g} > {PARITY_TOLERANCE:g}"
        log.warning("%s; the bundle serves the plain graph", why)
        return ServingGraphs(graph="plain", reason=why, requests=requests, parity=parity)
    report = ServingGraphs(
        graph="request", shared_inputs=shared, item_inputs=items, item_part_width=width, requests=requests,
        parity=parity, items_sha256=sha256_file(out_dir / ITEMS_ONNX),
        request_sha256=sha256_file(out_dir / REQUEST_ONNX),
    )  # fmt: skip
    if not int8 or (unwrap(model)[0].deep is None):
        return report  # int8 quantizes the MLP's matrix products: a shallow model has none
    gate_rows, labels = test if test is not None else (sample, None)
    static = INT8_METHOD == "static" and calibration is not None
    feeds = calibration_feeds(scorer, calibration) if static and calibration is not None else None
    quantized = quantize_request(out_dir / REQUEST_ONNX, out_dir, feeds)
    verdict = int8_gate(scorer, quantized, gate_rows, labels).model_copy(
        update={"method": "static" if static else "dynamic"}
    )
    if not verdict.usable:
        log.warning("int8 request graph not used: %s", verdict.reason)
        (out_dir / INT8_ONNX).unlink(missing_ok=True)
        verdict = verdict.model_copy(update={"sha256": None})
    return report.model_copy(update={"int8": verdict})
