"""Per-request scoring cost of each model's ONNX graph: ONNX Runtime time for N = 100 and 1,000 candidates.

Each model is built from a training config (a YAML, e.g. ``configs/tuned/MODEL.yaml``, or a registry
name with its defaults), exported by the real exporter over an encoder fitted on frappe_ctr's training
rows, and timed as the service runs it: one ``InferenceSession.run`` per request of N encoded test
rows, one intra-op thread. The cost depends on the graph, not on the weights, so the models are not
trained. Reports the median of ``--repeats`` calls per N (after warm-up), and the ratio to the first
model given.

    .venv/bin/python bench/score_latency.py deepfm xdeepfm autoint dcnv2
    .venv/bin/python bench/score_latency.py configs/tuned/deepfm.yaml configs/tuned/xdeepfm.yaml
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from experiments_common import DEFAULT_OUT, FRAPPE, machine, markdown_table, write_json
from rich.console import Console

from model.export import export_onnx
from model.nets import build_model
from training.config import TrainConfig, load_config
from training.data import encode_chunks
from training.datasets import resolve_dataset
from training.pipeline import fit_on

console = Console()
SIZES = (100, 1000)


def config_of(spec: str) -> TrainConfig:
    """A YAML path, or a registry name with its defaults."""
    path = Path(spec)
    return load_config(path) if path.suffix in (".yaml", ".yml") else load_config(None, [], model=spec)


def time_session(path: Path, feeds: dict[str, np.ndarray], repeats: int) -> float:
    """Median seconds of one ``run`` with these feeds, one intra-op thread, after 20 warm-up calls."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(["ctr"], feeds)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(["ctr"], feeds)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(specs: list[str], repeats: int) -> list[dict[str, Any]]:
    """Export each model and time it at every N."""
    splits = resolve_dataset(FRAPPE)
    encoder = fit_on(splits.schema, splits.train.chunks(200_000))
    assert splits.test is not None
    rows = encode_chunks(encoder, splits.test.chunks(200_000)).head(max(SIZES)).encoded(encoder.layout)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in specs:
            config = config_of(spec)
            model = build_model(config.model, encoder.layout, config.params).eval()
            path = Path(folder) / f"{config.model}.onnx"
            export_onnx(model, encoder.layout, rows, path)
            entry: dict[str, Any] = {"spec": spec, "model": config.model}
            for n in SIZES:
                feeds = {name: np.ascontiguousarray(values[:n]) for name, values in rows.items()}
                entry[f"ms_{n}"] = 1000 * time_session(path, feeds, repeats)
            console.log(f"{spec}: " + ", ".join(f"N={n} {entry[f'ms_{n}']:.3f} ms" for n in SIZES))
            results.append(entry)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="config YAMLs or registry names; the first is the baseline")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    results = measure(args.specs, args.repeats)
    base = results[0]
    headers = ["model", *(f"N={n} ms" for n in SIZES), *(f"N={n} vs {base['spec']}" for n in SIZES)]
    rows = [
        [
            r["spec"],
            *(f"{r[f'ms_{n}']:.3f}" for n in SIZES),
            *(f"{r[f'ms_{n}'] / base[f'ms_{n}']:.2f}x" for n in SIZES),
        ]
        for r in results
    ]
    table = markdown_table(headers, rows)
    console.print(table)
    out = args.out_dir / "score_latency"
    write_json(
        out / "score_latency.json", {"machine": machine(), "repeats": args.repeats, "results": results}
    )
    (out / "score_latency.md").write_text(table)


if __name__ == "__main__":
    main()
