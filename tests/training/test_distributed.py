"""Data-parallel training: 2 processes on CPU (torchrun, gloo) match single-process training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from model.bundle import read_bundle
from training.launch import without_launch_options

REPO = Path(__file__).resolve().parents[2]
SETS = [
    "epochs=2",
    "max_rows=30000",
    "hidden_units=[64,64]",
    "batch_size=1024",
    "threads=1",
    "precision=fp32",
    "serving_graphs=false",  # the AUCs are the point: model.onnx only
]


def _train(data: Path, out: Path, nproc: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "apprank",
        "train",
        "--model",
        "deepfm",
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    command += [arg for item in SETS for arg in ("--set", item)] + ["--nproc", str(nproc)]
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, timeout=600)
    return read_bundle(out).manifest.metrics["test"]


def test_two_processes_match_one_within_noise(data_dir: Path, tmp_path: Path) -> None:
    single = _train(data_dir / "frappe_ctr", tmp_path / "one", 1)
    double = _train(data_dir / "frappe_ctr", tmp_path / "two", 2)
    assert abs(single["auc"] - double["auc"]) < 0.01, json.dumps({"one": single, "two": double})
    assert double["auc"] > 0.9  # it learned: same data, same global batch


def test_children_do_not_relaunch() -> None:
    argv = ["train", "--nproc", "2", "--data", "d", "--nproc=4", "--out", "o", "--nnodes", "2"]
    argv += ["--node-rank=1", "--master-addr", "h", "--master-port", "1234", "--nodes-file", "x"]
    assert without_launch_options(argv) == ["train", "--data", "d", "--out", "o", "--nodes-file", "x"]
