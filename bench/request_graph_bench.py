"""Model-only cost of the plain graph vs the request-shaped graphs (fp32, int8) at N = 100, 1,000, 10,000.

On a real DeepFM-D frappe_ctr bundle (``apprank train --model deepfm``, as bench/train_frappe.py does),
one request = one user and context from a frappe_ctr test row and N real apps with their features (the
4,082 apps repeat past that). Each figure is the median of ``--repeats`` calls after warm-up, one
intra-op thread, all in one run:

* ``plain fp32``: ``model.onnx`` on the N encoded rows (the bare ONNX call the service made so far);
* ``request fp32, cold``: the item graph on the N candidates, then the request graph (no item cache);
* ``request fp32, warm``: the request graph alone, every item part cached (known apps);
* ``int8 dynamic / static, cold / warm``: the same with the request graph quantized to int8, dynamically
  or statically (calibrated on validation rows); each one's export gate figures are recorded too;
* ``rank path``: parse + encode + score + top 10 in-process (``Ranker``; no HTTP, no rendering), the
  item cache warm, for the plain graph, the request graph and the bundle's int8 graph (when its gate
  kept one; else the figure is fp32's again, and ``graph_request_int8`` says so).

A bundle trained before the request graphs existed gets them here (exported from its weights.pt into
a copy under /tmp, with the export's parity check and int8 gate).

    flock /tmp/bench.lock nice .venv/bin/python bench/request_graph_bench.py --bundle /tmp/frappe/deepfm
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from experiments_common import DEFAULT_OUT, FRAPPE, machine, markdown_table, write_json
from rich.console import Console

from model.bundle import ITEM_PART, ITEMS_ONNX, MANIFEST, ONNX, REQUEST_ONNX, read_bundle
from model.schema import Source
from model.serving_graphs import quantize_request, session

console = Console()
SIZES = (100, 1_000, 10_000)


def read_rows(path: Path, limit: int = 30_000) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [row for _, row in zip(range(limit), csv.DictReader(handle), strict=False)]


def with_request_graphs(bundle_dir: Path, work: Path) -> Path:
    """``bundle_dir`` when it has request graphs, else a copy with them exported from its weights."""
    bundle = read_bundle(bundle_dir)
    if bundle.manifest.serving is not None and bundle.manifest.serving.graph == "request":
        return bundle_dir
    import torch

    from model.export import export_serving_graphs
    from model.nets import build_model
    from model.nets.calibration import PlattScaled
    from training.data import encode_chunks
    from training.datasets import resolve_dataset

    copy = work / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    manifest = bundle.manifest
    model = build_model(manifest.model, bundle.encoder.layout, manifest.hyperparameters.get("params"))
    model.load_state_dict(torch.load(copy / "weights.pt", map_location="cpu", weights_only=True))
    training = manifest.metrics.get("training", {})
    served = model.eval()
    if "platt_scale" in training:
        served = PlattScaled(model, training["platt_scale"], training["platt_shift"]).eval()
    splits = resolve_dataset(FRAPPE)
    assert splits.test is not None
    test = encode_chunks(bundle.encoder, splits.test.chunks(200_000))
    rows = test.encoded(bundle.encoder.layout)
    sample = test.head(10_000).encoded(bundle.encoder.layout)
    serving = export_serving_graphs(
        served, bundle.encoder.layout, bundle.schema, sample, copy, (rows, test.labels.numpy())
    )
    (copy / MANIFEST).write_text(manifest.model_copy(update={"serving": serving}).model_dump_json(indent=2))
    console.log(f"request graphs exported into {copy}: {serving.graph}, int8: {serving.int8}")
    return copy


def body(rows: list[dict[str, str]], bundle_dir: Path, n: int) -> bytes:
    """One user and context (the first row), N apps with their features."""
    schema = read_bundle(bundle_dir).schema
    first, item_id = rows[0], schema.item_id_field or "item"
    items = [f.name for f in schema.by_source(Source.ITEM) if f.name != item_id]
    apps: dict[str, dict[str, Any]] = {}
    for row in rows:
        apps.setdefault(row[item_id], {"app_id": row[item_id], "features": {k: row[k] for k in items}})
    distinct = list(apps.values())
    # past the distinct apps the real ones come again under new ids (ids are unique in a request): real
    # features, an unknown ``item`` id
    candidates = [
        distinct[i] if i < len(distinct) else distinct[i % len(distinct)] | {"app_id": f"{i}-copy"}
        for i in range(n)
    ]
    return orjson.dumps(
        {
            "user_id": first[schema.user_id_field or "user"],
            "context": {f.name: first[f.name] for f in schema.by_source(Source.CONTEXT)},
            "candidates": candidates,
            "top_k": 10,
        }
    )


def median_ms(call: Callable[[], object], repeats: int, warm_up: int = 20) -> float:
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def int8_variants(bundle_dir: Path, work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """Dynamic and static (calibrated on validation rows) int8 request graphs, with their gate figures."""
    from model.serving_graphs import RequestScorer, calibration_feeds, int8_gate

    bundle = read_bundle(bundle_dir)
    serving = bundle.manifest.serving
    assert serving is not None

    def encoded(path: Path) -> tuple[dict[str, Any], Any]:
        rows = read_rows(path, limit=100_000)
        columns = {name: np.array([row[name] for row in rows]) for name in bundle.schema.names}
        labels = np.array([float(row["label"]) for row in rows], dtype=np.float32)
        return bundle.encoder.transform(columns, len(rows)), labels

    scorer = RequestScorer(
        bundle_dir / ITEMS_ONNX, bundle_dir / REQUEST_ONNX, serving.shared_inputs, serving.item_inputs
    )
    valid, _ = encoded(FRAPPE / "valid.csv")
    test, labels = encoded(FRAPPE / "test.csv")
    paths, gates = {}, {}
    for method in ("dynamic", "static"):
        folder = work / f"int8-{method}"
        folder.mkdir()
        feeds = calibration_feeds(scorer, valid) if method == "static" else None
        paths[method] = quantize_request(bundle_dir / REQUEST_ONNX, folder, feeds)
        gates[method] = int8_gate(scorer, paths[method], test, labels).model_dump(mode="json")
        console.log(f"int8 {method}: {gates[method]['reason']}")
    return paths, gates


def model_only(bundle_dir: Path, payload: bytes, int8: dict[str, Path], repeats: int) -> dict[str, float]:
    """The model-only figures (ms) for one request."""
    from service.rank.payload import parse_rank_request
    from service.rank.registry import LoadOptions, load_model

    request = parse_rank_request(payload, 100_000)
    plain_model = load_model(bundle_dir.name, bundle_dir, LoadOptions("cpu", 1, 1))
    plain_inputs = plain_model.encoder.encode(request)
    serving = read_bundle(bundle_dir).manifest.serving
    assert serving is not None
    items, head = session(bundle_dir / ITEMS_ONNX), session(bundle_dir / REQUEST_ONNX)
    item_feeds = {n: plain_inputs[n] for n in serving.item_inputs}
    user = {n: plain_inputs[n][:1] for n in serving.shared_inputs}
    part = items.run([ITEM_PART], item_feeds)[0]

    def cold(graph: Any) -> Callable[[], object]:
        return lambda: graph.run(["ctr"], user | {ITEM_PART: items.run([ITEM_PART], item_feeds)[0]})

    def warm(graph: Any) -> Callable[[], object]:
        return lambda: graph.run(["ctr"], user | {ITEM_PART: part})

    plain = session(bundle_dir / ONNX)
    out = {
        "plain_fp32": median_ms(lambda: plain.run(["ctr"], plain_inputs), repeats),
        "request_fp32_cold": median_ms(cold(head), repeats),
        "request_fp32_warm": median_ms(warm(head), repeats),
    }
    for method, path in int8.items():
        head8 = session(path)
        out[f"int8_{method}_cold"] = median_ms(cold(head8), repeats)
        out[f"int8_{method}_warm"] = median_ms(warm(head8), repeats)
    return out


def rank_path(bundle_dir: Path, payload: bytes, repeats: int) -> dict[str, float]:
    """Parse + encode + score + top 10 in-process, item cache warm (ms), per graph."""
    from service.experiments.models import Objective
    from service.rank.payload import parse_rank_request
    from service.rank.ranker import Ranker
    from service.rank.registry import LoadOptions, load_model

    out = {}
    for label, graph, int8 in (
        ("plain", False, False),
        ("request", True, False),
        ("request_int8", True, True),
    ):
        options = LoadOptions("cpu", 1, 1, item_cache_size=50_000, request_graph=graph, int8=int8)
        model = load_model(bundle_dir.name, bundle_dir, options)
        ranker = Ranker()

        def call(model: Any = model, ranker: Ranker = ranker) -> object:
            return ranker.rank(model, parse_rank_request(payload, 100_000), Objective.CTR)

        out[f"rank_{label}"] = median_ms(call, repeats)
        out[f"graph_{label}"] = model.graph  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a DeepFM-D frappe_ctr bundle")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rows = read_rows(FRAPPE / "test.csv")
    with tempfile.TemporaryDirectory(prefix="request-graph-bench-") as folder:
        bundle_dir = with_request_graphs(args.bundle, Path(folder))
        manifest = read_bundle(bundle_dir).manifest
        assert manifest.serving is not None
        int8, gates = int8_variants(bundle_dir, Path(folder))  # measured even where a gate refuses one
        results = []
        for n in SIZES:
            payload = body(rows, bundle_dir, n)
            repeats = args.repeats if n < 10_000 else max(20, args.repeats // 10)
            entry: dict[str, Any] = {"n": n, **model_only(bundle_dir, payload, int8, repeats)}
            entry |= rank_path(bundle_dir, payload, repeats)
            console.log(json.dumps(entry))
            results.append(entry)
    columns = [
        "plain_fp32", "request_fp32_cold", "request_fp32_warm", "int8_dynamic_cold", "int8_dynamic_warm",
        "int8_static_cold", "int8_static_warm", "rank_plain", "rank_request", "rank_request_int8",
    ]  # fmt: skip
    headers = ["N", *(f"{c} ms" for c in columns), "warm fp32 / plain"]
    table_rows = [
        [str(r["n"]), *(f"{r[c]:.3f}" for c in columns), f"{r['request_fp32_warm'] / r['plain_fp32']:.2f}x"]
        for r in results
    ]
    table = markdown_table(headers, table_rows)
    console.print(table)
    serving = manifest.serving.model_dump(mode="json")
    out = args.out_dir / "request_graph"
    document = {
        "machine": machine(), "bundle": str(args.bundle), "serving": serving, "int8_gates": gates,
        "results": results,
    }  # fmt: skip
    write_json(out / "request_graph.json", document)
    (out / "request_graph.md").write_text(table)


if __name__ == "__main__":
    main()
