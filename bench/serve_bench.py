"""Benchmark of the ranking service: real uvicorn processes driven by wrk, beside the bare ONNX call.

For N = 100 and 1,000 candidates and 1 and 2 workers it reports p50 / p99 latency at one connection
(the service's own latency), and requests per second with p50 / p99 under load (several connections).
In the same run it times the bare ONNX Runtime call on the same encoded batch; the service overhead is
``p50(/rank) - p50(onnx)``. Payloads are real frappe_ctr rows (one user and context, N distinct apps).

wrk posts the same body again and again, so from the second request on every candidate is an item
cache hit (an app store's steady state: the catalogue's apps come back with the same features). Run
with ``--item-cache-size 0`` for the other extreme, every app new to the service.

    .venv/bin/python bench/serve_bench.py --models artifacts/frappe --out bench/results/serve.json

Needs ``wrk`` (``apt-get install -y wrk``). Without ``--models`` (or with an empty directory) it builds a
stand-in DeepFM-D bundle (random weights, the real exporter) on an encoder fitted on the real rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service_process import free_port, start_service  # noqa: E402

from model.bundle import read_bundle  # noqa: E402
from model.schema import Source  # noqa: E402

log = logging.getLogger("serve_bench")
DATA = REPO.parent / "shared" / "data" / "frappe_ctr"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()
local errors = 0
response = function(status, headers, body) if status ~= 200 then errors = errors + 1 end end
done = function(summary, latency, requests)
  local out = io.open("{out}", "w")
  out:write(string.format('{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "socket_errors": %d}}', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), summary.errors.status + errors, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
  out:close()
end
"""


def read_rows(path: Path, limit: int = 20_000) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [row for _, row in zip(range(limit), csv.DictReader(handle), strict=False)]


def payload(rows: list[dict[str, str]], bundle_dir: Path, n: int) -> bytes:
    """One user and context from the first row, N distinct apps (with their features) from the rows."""
    schema = read_bundle(bundle_dir).schema
    first = rows[0]
    items = [f.name for f in schema.by_source(Source.ITEM) if f.name != schema.item_id_field]
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        app = row[schema.item_id_field or "item"]
        if app not in seen:
            seen[app] = {"app_id": app, "bid": 1.0 + len(seen) % 7, "features": {k: row[k] for k in items}}
        if len(seen) == n:
            break
    body = {
        "user_id": first.get(schema.user_id_field or "user", "u"),
        "context": {f.name: first[f.name] for f in schema.by_source(Source.CONTEXT)},
        "candidates": list(seen.values()),
    }
    return orjson.dumps(body)


def bare_onnx(bundle_dir: Path, body: bytes, repeats: int) -> dict[str, float]:
    """p50 / p99 of ``session.run`` alone on the encoded batch of ``body`` (same session options)."""
    from service.rank.payload import parse_rank_request
    from service.rank.registry import LoadOptions, load_model

    model = load_model(bundle_dir.name, bundle_dir, LoadOptions("cpu", 1, 1))
    inputs = model.encoder.encode(parse_rank_request(body, 100_000))
    for _ in range(50):
        model.run(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.run(inputs)
        times.append(time.perf_counter() - started)
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3)}


def start_server(
    models: Path, model: str, workers: int, work: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str]:
    settings = {
        "APPRANK_MODELS_DIR": str(models),
        "APPRANK_DATABASE_URL": f"sqlite:///{work}/bench-{free_port()}.db",
        "APPRANK_MAX_CANDIDATES": "5000",
        "APPRANK_DEFAULT_MODEL": model,
        "APPRANK_EVENT_LOG": str(args.with_event_log).lower(),
    }
    if args.item_cache_size is not None:
        settings["APPRANK_ITEM_CACHE_SIZE"] = str(args.item_cache_size)
    return start_service(settings, workers)


def wrk(url: str, body: Path, work: Path, connections: int, threads: int, seconds: int) -> dict[str, float]:
    """One wrk run posting ``body`` to /rank; latency figures in ms."""
    out = work / f"wrk-{connections}-{time.monotonic_ns()}.json"
    script = work / "post.lua"
    script.write_text(LUA.format(body=body, out=out))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"{url}/rank"]
    subprocess.run(command, check=True, capture_output=True)
    result = json.loads(out.read_text())
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1e3,
        "p99_ms": result["p99_us"] / 1e3,
        "errors": result["errors"] + result["socket_errors"],
    }


def fixture_models(work: Path, rows: list[dict[str, str]]) -> Path:
    """A stand-in bundle on the frappe_ctr schema with an encoder fitted on the real training rows.

    DeepFM-D (default hyperparameters, random weights) through the real exporter when torch is
    installed, else the LR test graph: same inputs, so the service's overhead is the same.
    """
    from model.fitting import fit_encoder
    from model.schema import FeatureSchema

    schema = FeatureSchema.load(REPO / "configs" / "schemas" / "frappe_ctr.yaml")
    encoder = fit_encoder(schema, {name: np.array([r[name] for r in rows]) for name in schema.names})
    try:
        _export_deepfm(encoder, work / "models" / "deepfm")
    except ImportError:
        from tests.service.bundles import random_weights, write_lr_bundle

        write_lr_bundle(work / "models" / "lr", encoder, random_weights(encoder))
    return work / "models"


def _export_deepfm(encoder: Any, out: Path) -> None:
    from datetime import UTC, datetime

    import torch

    from model.bundle import ONNX, Manifest, sha256_file, write_bundle
    from model.export import OPSET, export_onnx, parity_check
    from model.nets import build_model

    torch.manual_seed(0)
    net = build_model("deepfm", encoder.layout)
    staging = out.parent / ".staging-deepfm"
    staging.mkdir(parents=True)
    export_onnx(net, encoder.layout, encoder.transform({}, 4), staging / ONNX)
    parity = parity_check(net, encoder.layout, encoder.transform({}, 8), staging / ONNX)
    manifest = Manifest(
        name="deepfm", model="deepfm", version="fixture", created_at=datetime.now(UTC),
        schema_hash=encoder.schema.content_hash(), data_fingerprint="frappe_ctr",
        onnx_sha256=sha256_file(staging / ONNX), opset=OPSET, inputs=list(encoder.schema.names),
        parity=parity, metrics={}, hyperparameters={},
    )  # fmt: skip
    write_bundle(out, manifest, encoder.schema, encoder, staging)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    rows = read_rows(args.data / "test.csv")
    models = args.models
    if models is None or not any(p.is_dir() for p in models.iterdir()):
        models = fixture_models(work, read_rows(args.data / "train.csv", 300_000))
    dirs = [p for p in sorted(models.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    bundle_dir = next(p for p in dirs if args.model in (None, p.name))
    results = []
    bodies = {}
    for n in args.candidates:
        bodies[n] = work / f"body-{n}.json"
        bodies[n].write_bytes(payload(rows, bundle_dir, n))
    onnx = {n: bare_onnx(bundle_dir, bodies[n].read_bytes(), args.repeats) for n in args.candidates}
    for workers in args.workers:
        server, url = start_server(models, bundle_dir.name, workers, work, args)
        try:
            for n in args.candidates:
                wrk(url, bodies[n], work, 1, 1, 2)  # warm-up
                single = wrk(url, bodies[n], work, 1, 1, args.seconds)
                loaded = wrk(url, bodies[n], work, args.connections, 2, args.seconds)
                results.append(_row(bundle_dir.name, n, workers, single, loaded, onnx[n]))
        finally:
            server.terminate()
            server.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)
    return results


def _row(model: str, n: int, workers: int, single: dict[str, float], loaded: dict[str, float],
         onnx: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    return {
        "model": model,
        "candidates": n,
        "workers": workers,
        "p50_ms": single["p50_ms"],
        "p99_ms": single["p99_ms"],
        "onnx_p50_ms": onnx["p50_ms"],
        "overhead_p50_ms": single["p50_ms"] - onnx["p50_ms"],
        "loaded_rps": loaded["rps"],
        "loaded_p50_ms": loaded["p50_ms"],
        "loaded_p99_ms": loaded["p99_ms"],
        "errors": single["errors"] + loaded["errors"],
    }


def show(results: list[dict[str, Any]], connections: int) -> None:
    table = Table(title=f"POST /rank (latency at 1 connection; req/s at {connections} connections)")
    for column in (
        "N",
        "workers",
        "p50 ms",
        "p99 ms",
        "onnx p50",
        "overhead",
        "req/s",
        "p50 load",
        "p99 load",
        "err",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            str(r["candidates"]), str(r["workers"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
            f"{r['onnx_p50_ms']:.3f}", f"{r['overhead_p50_ms']:.2f}", f"{r['loaded_rps']:.0f}",
            f"{r['loaded_p50_ms']:.2f}", f"{r['loaded_p99_ms']:.2f}", str(r["errors"]),
        )  # fmt: skip
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", type=Path, default=None, help="directory of bundles (first one is served)"
    )
    parser.add_argument("--model", default=None, help="bundle (subdirectory) to request; default: the first")
    parser.add_argument("--data", type=Path, default=DATA, help="frappe_ctr directory (payloads)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2000, help="bare ONNX calls timed")
    parser.add_argument("--with-event-log", action="store_true", help="log served lists (SQLite) too")
    parser.add_argument(
        "--item-cache-size",
        type=int,
        default=None,
        help="APPRANK_ITEM_CACHE_SIZE of the service (default: the service's); 0 encodes every candidate "
        "of every request, as if no app had been seen before",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    results = run(args)
    show(results, args.connections)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
        options = {"item_cache_size": args.item_cache_size, "event_log": args.with_event_log}
        document = {"machine": machine, "options": options, "results": results}
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
