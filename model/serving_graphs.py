"""Checks of the request-shaped graphs at export, with ONNX Runtime only (no torch).

* ``group_requests`` turns real rows into requests: rows with the same user and context encoding are
  one request (frappe_ctr keeps the user and context of each positive for its negatives), the rows'
  items its candidates.
* ``request_parity`` scores every request with ``model.items.onnx`` + ``model.request.onnx`` and
  compares each candidate's CTR with the plain graph's CTR of the same row.
* ``quantize_request`` writes ``model.int8.onnx`` (the request graph's matrix products in int8, dynamic
  quantization) and ``int8_gate`` decides whether it may serve: the test AUC within ``AUC_SLACK`` of
  fp32, the top-10 lists of ``GATE_REQUESTS`` requests of real rows equal on ``TOP10_AGREEMENT``, and
  the int8 head faster than the fp32 head at every size of ``SPEED_CANDIDATES`` on this CPU
  (``head_speed``; int8 is slower than fp32 on some CPUs). ``int8_verdict`` is that decision alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.bundle import INT8_ONNX, ITEM_PART, Int8Report, ParityReport, sha256_file
from model.encoder import Encoded

AUC_SLACK = 0.0005
TOP10_AGREEMENT = 0.99
GATE_REQUESTS = 1_000
GATE_CANDIDATES = 100
SPEED_CANDIDATES = (100, 1_000)
SPEED_ROUNDS = 7  # interleaved rounds (fp32, int8, fp32, ...): a shared machine's load weighs on both alike
SPEED_CALLS = 10  # calls per round, timed together
log = logging.getLogger(__name__)


def session(path: Path) -> Any:
    """A one-thread CPU session (what the service runs per worker)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def group_requests(encoded: Encoded, shared: Sequence[str]) -> list[npt.NDArray[np.int64]]:
    """Row numbers of each request: rows whose ``shared`` (user + context) inputs are all equal."""
    rows = len(next(iter(encoded.values())))
    keys = np.concatenate(
        [np.ascontiguousarray(encoded[name]).reshape(rows, -1).view(np.uint8) for name in shared], axis=1
    )
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    bounds = np.flatnonzero(np.diff(inverse.ravel()[order])) + 1
    return [part.astype(np.int64) for part in np.split(order, bounds)]


class RequestScorer:
    """Scores one request: the item graph on its candidates, the request graph on user + item part."""

    def __init__(self, items: Path, request: Path, shared: Sequence[str], item_fields: Sequence[str]) -> None:
        self.items, self.request = session(items), session(request)
        self.shared, self.item_fields = list(shared), list(item_fields)

    def item_part(self, encoded: Encoded, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        feeds = {name: np.ascontiguousarray(encoded[name][rows]) for name in self.item_fields}
        out: npt.NDArray[np.float32] = self.items.run([ITEM_PART], feeds)[0]
        return out

    def ctr(
        self, user_row: Encoded, item_part: npt.NDArray[np.float32], head: Any = None
    ) -> npt.NDArray[Any]:
        """CTR of the candidates whose item part is given, for the user + context of ``user_row`` ([1])."""
        feeds = {name: user_row[name] for name in self.shared} | {ITEM_PART: item_part}
        return np.asarray((head or self.request).run(["ctr"], feeds)[0])


def _user_row(encoded: Encoded, shared: Sequence[str], row: int) -> Encoded:
    return {name: np.ascontiguousarray(encoded[name][row : row + 1]) for name in shared}


def request_ctr(
    scorer: RequestScorer, encoded: Encoded, requests: list[npt.NDArray[np.int64]], head: Any = None
) -> npt.NDArray[np.float32]:
    """Every row's CTR, scored request by request (rows in their original order)."""
    rows = len(next(iter(encoded.values())))
    out = np.zeros(rows, dtype=np.float32)
    for members in requests:
        part = scorer.item_part(encoded, members)
        out[members] = scorer.ctr(_user_row(encoded, scorer.shared, int(members[0])), part, head)
    return out


def request_parity(
    scorer: RequestScorer, encoded: Encoded, plain_ctr: npt.NDArray[Any], tolerance: float
) -> tuple[ParityReport, int]:
    """Request-shaped vs plain CTR of every row; the report and the number of requests."""
    requests = group_requests(encoded, scorer.shared)
    got = request_ctr(scorer, encoded, requests)
    diff = float(np.max(np.abs(got.astype(np.float64) - plain_ctr))) if got.size else 0.0
    report = ParityReport(
        rows=int(got.size), max_abs_diff=diff, tolerance=tolerance, passed=diff <= tolerance
    )
    log.info(
        "request graph parity on %d rows (%d requests): max |diff| = %.3g", got.size, len(requests), diff
    )
    return report, len(requests)


def auc(labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float:
    """ROC AUC by the rank-sum formula, ties sharing their average rank."""
    y = np.asarray(labels) > 0.5
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    values, inverse, counts = np.unique(
        np.asarray(scores, np.float64), return_inverse=True, return_counts=True
    )
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based ranks
    rank_sum = float(average_rank[inverse.ravel()][y].sum())
    del values
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def calibration_feeds(
    scorer: RequestScorer, encoded: Encoded, requests: int = 64, candidates: int = 200, seed: int = 1
) -> list[dict[str, npt.NDArray[Any]]]:
    """Request-graph inputs of real rows for static calibration: a user + context, real items each."""
    rows = len(next(iter(encoded.values())))
    rng = np.random.default_rng(seed)
    feeds = []
    for user in rng.choice(rows, size=min(requests, rows), replace=False).tolist():
        members = rng.choice(rows, size=min(candidates, rows), replace=False).astype(np.int64)
        feeds.append(
            _user_row(encoded, scorer.shared, user) | {ITEM_PART: scorer.item_part(encoded, members)}
        )
    return feeds


def per_request_products(request: Path) -> list[str]:
    """Names of the request graph's MatMul / Gemm nodes that do not depend on ``item_part`` (computed
    once per request), each also as the quantizer names a Gemm it rewrites into a MatMul."""
    import onnx

    graph = onnx.load(str(request)).graph
    per_candidate = {ITEM_PART}
    names = []
    for node in graph.node:  # ONNX keeps nodes in topological order
        if per_candidate.intersection(node.input):
            per_candidate.update(node.output)
        elif node.op_type in ("MatMul", "Gemm"):
            names += [node.name, f"{node.name}_MatMul"]
    return names


def quantize_request(
    request: Path, out_dir: Path, calibration: list[dict[str, npt.NDArray[Any]]] | None = None
) -> Path:
    """``model.int8.onnx``: the request graph's MatMul / Gemm in int8 (weights int8 per output channel,
    activations uint8).

    Static (scales calibrated on ``calibration``, QOperator format) when calibration feeds are given,
    dynamic (activation scales computed per call) otherwise.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    out = out_dir / INT8_ONNX
    ops = ["MatMul", "Gemm"]
    # the user + context products run once per request ([1, ...] rows): int8 saves nothing there, and
    # their rounding error, shared by every candidate, moved near-tied scores enough to fail the top-10
    # gate on frappe_ctr; only the products on the candidates' path ([N, ...]) are quantized
    keep = per_request_products(request)
    if calibration is None:
        # per output channel (one scale per column of each weight matrix): one scale per matrix moved
        # enough near-tied scores to fail the top-10 gate on frappe_ctr (README: serving figures)
        quantize_dynamic(
            str(request), str(out), op_types_to_quantize=ops, weight_type=QuantType.QInt8,
            per_channel=True, nodes_to_exclude=keep,
        )  # fmt: skip
        return out

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter(calibration or [])

        def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
            return next(self.feeds, None)

    quantize_static(
        str(request), str(out), Reader(), quant_format=QuantFormat.QOperator, op_types_to_quantize=ops,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
    )  # fmt: skip
    return out


def top10_agreement(
    scorer: RequestScorer, head: Any, encoded: Encoded, requests: int, candidates: int, seed: int = 0
) -> tuple[float, int]:
    """Share of requests (real users + contexts, ``candidates`` real items each) whose top 10 sets agree."""
    rows = len(next(iter(encoded.values())))
    rng = np.random.default_rng(seed)
    users = rng.choice(rows, size=min(requests, rows), replace=False)
    same = 0
    for user in users.tolist():
        members = rng.choice(rows, size=min(candidates, rows), replace=False).astype(np.int64)
        part = scorer.item_part(encoded, members)
        row = _user_row(encoded, scorer.shared, user)
        fp32, int8 = scorer.ctr(row, part), scorer.ctr(row, part, head)
        same += set(np.argsort(-fp32, kind="stable")[:10]) == set(np.argsort(-int8, kind="stable")[:10])
    return same / max(len(users), 1), len(users)


Speeds = tuple[list[int], list[float], list[float]]  # candidates, fp32 ms, int8 ms (medians)
SpeedProbe = Callable[[RequestScorer, Any, Encoded], Speeds]


def head_speed(scorer: RequestScorer, head: Any, encoded: Encoded, seed: int = 2) -> Speeds:
    """Median ms of one call of the fp32 and of the int8 request head (one thread, warm: the item parts
    given, as the service's item cache gives them) for a real user + context and ``SPEED_CANDIDATES``
    real items."""
    rows = len(next(iter(encoded.values())))
    rng = np.random.default_rng(seed)
    fp32_ms, int8_ms = [], []
    for n in SPEED_CANDIDATES:
        members = rng.choice(rows, size=n, replace=n > rows).astype(np.int64)
        feeds = _user_row(encoded, scorer.shared, int(members[0])) | {
            ITEM_PART: scorer.item_part(encoded, members)
        }
        rounds: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(SPEED_ROUNDS + 1):  # the first round warms both sessions up and is dropped
            for which, session in enumerate((scorer.request, head)):
                started = time.perf_counter()
                for _ in range(SPEED_CALLS):
                    session.run(["ctr"], feeds)
                rounds[which].append((time.perf_counter() - started) * 1e3 / SPEED_CALLS)
        fp32_ms.append(float(np.median(rounds[0][1:])))
        int8_ms.append(float(np.median(rounds[1][1:])))
    return list(SPEED_CANDIDATES), fp32_ms, int8_ms


def int8_verdict(figures: Int8Report) -> Int8Report:
    """``figures`` with ``usable`` and ``reason`` decided: the quality bars, then the speed (when timed)."""
    if figures.auc_fp32 is None or figures.auc_int8 is None or figures.top10_agreement is None:
        return figures.model_copy(update={"usable": False, "reason": "the int8 graph was not checked"})
    fp32_auc, int8_auc = figures.auc_fp32, figures.auc_int8
    gap = abs(int8_auc - fp32_auc)
    if not gap <= AUC_SLACK:
        reason = f"test AUC {int8_auc:.5f} vs fp32 {fp32_auc:.5f}: more than {AUC_SLACK} apart"
        return figures.model_copy(update={"usable": False, "reason": reason})
    if figures.top10_agreement < TOP10_AGREEMENT:
        reason = (
            f"top-10 lists agree on {figures.top10_agreement:.1%} of {figures.requests} requests "
            f"(< {TOP10_AGREEMENT:.0%})"
        )
        return figures.model_copy(update={"usable": False, "reason": reason})
    timed = zip(figures.speed_candidates, figures.fp32_ms, figures.int8_ms, strict=True)
    speed = ", ".join(f"N={n}: {i8:.3g} vs {f32:.3g} ms" for n, f32, i8 in timed)
    if any(i8 >= f32 for f32, i8 in zip(figures.fp32_ms, figures.int8_ms, strict=True)):
        reason = f"int8 head not faster than fp32 on this CPU ({speed})"
        return figures.model_copy(update={"usable": False, "reason": reason})
    reason = f"AUC within {gap:.2g}, top-10 agreement {figures.top10_agreement:.1%}"
    reason += f"; int8 head {speed}" if speed else "; speed not measured"
    return figures.model_copy(update={"usable": True, "reason": reason})


def int8_gate(
    scorer: RequestScorer,
    int8_path: Path,
    test: Encoded,
    labels: npt.NDArray[Any] | None,
    speed: SpeedProbe | None = None,
) -> Int8Report:
    """Whether ``int8_path`` may serve: the AUC, top-10 and speed figures against fp32, and the decision.

    ``speed`` times the two heads (``head_speed`` when not given); it runs only when the quality bars
    hold.
    """
    head = session(int8_path)
    if labels is None or labels.size == 0:
        return Int8Report(usable=False, reason="no labelled test rows to check the int8 graph on")
    requests = group_requests(test, scorer.shared)
    auc_fp32 = auc(labels, request_ctr(scorer, test, requests))
    auc_int8 = auc(labels, request_ctr(scorer, test, requests, head))
    agreement, asked = top10_agreement(scorer, head, test, GATE_REQUESTS, GATE_CANDIDATES)
    figures = int8_verdict(Int8Report(
        usable=False, reason="", auc_fp32=auc_fp32, auc_int8=auc_int8, auc_rows=int(labels.size),
        top10_agreement=agreement, requests=asked, sha256=sha256_file(int8_path),
    ))  # fmt: skip
    if not figures.usable:
        return figures
    sizes, fp32_ms, int8_ms = (speed or head_speed)(scorer, head, test)
    timed = figures.model_copy(update={"speed_candidates": sizes, "fp32_ms": fp32_ms, "int8_ms": int8_ms})
    return int8_verdict(timed)
