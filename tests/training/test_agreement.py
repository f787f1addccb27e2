"""Nodes that were given different settings or differently prepared data stop together, saying why."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.stream_support import SCHEMA, small_config, write_dataset
from training.agreement import differences, run_identity

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def test_identity_covers_the_settings_but_not_the_nodes_own() -> None:
    base = run_identity(small_config(), "f" * 64, SCHEMA, None)
    assert run_identity(small_config("threads=2", "async_loading=false"), "f" * 64, SCHEMA, None) == base
    other = run_identity(small_config("early_stopping.patience=5", "batch_size=128"), "f" * 64, SCHEMA, None)
    assert differences([base, base, other]) == [
        "batch_size: rank 0 256, rank 2 128",
        "early_stopping.patience: rank 0 2, rank 2 5",
    ]
    assert differences([base, run_identity(small_config(), "e" * 64, SCHEMA, None)]) == [
        "data fingerprint: rank 0 ffffffffffff..., rank 1 eeeeeeeeeeee..."
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _prepare(raw: Path, outs: dict[int, Path]) -> list[Path]:
    """``raw`` prepared once per row-group size (at the same time), into ``outs[size]``."""
    processes = []
    for rows, out in outs.items():
        command = [sys.executable, "-m", "apprank", "prepare", "--data", str(raw), "--out", str(out)]
        command += ["--set", f"prepare.row_group_rows={rows}"]
        processes.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL))
    for process in processes:
        assert process.wait(timeout=TIMEOUT_S) == 0
    return list(outs.values())


@pytest.mark.slow
def test_nodes_that_disagree_stop_with_the_differences(tmp_path: Path) -> None:
    raw = write_dataset(tmp_path / "raw")
    data = _prepare(raw, {rows: tmp_path / f"prepared-{rows}" for rows in (256, 512)})
    port = _free_port()
    processes, logs = [], [tmp_path / f"node{rank}.log" for rank in range(2)]
    for rank in range(2):
        command = [sys.executable, "-m", "apprank", "train", "--data", str(data[rank])]
        command += ["--out", str(tmp_path / f"node{rank}"), "--model", "lr", "--set", f"epochs={rank + 1}"]
        command += ["--set", "threads=1", "--nnodes", "2", "--node-rank", str(rank)]
        command += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "COLUMNS": "400"}
        with logs[rank].open("wb") as sink:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        processes.append(process)
    for process in processes:
        process.wait(timeout=TIMEOUT_S)
    for process, log in zip(processes, logs, strict=True):
        output = log.read_text()
        assert process.returncode != 0, output[-3000:]
        assert "the nodes of this run disagree" in output, output[-3000:]
        assert "epochs: rank 0 1, rank 1 2" in output
        assert "prepared layout: rank 0 " in output
    assert not (tmp_path / "node0").exists()
