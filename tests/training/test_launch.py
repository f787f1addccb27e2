"""The torchrun command line of ``apprank train`` and the checks that run before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser

from training.launch import RENDEZVOUS_TIMEOUT_S, LaunchError, Topology, torchrun_arguments

REPO = Path(__file__).resolve().parents[2]


def test_one_machine_runs_a_standalone_rendezvous() -> None:
    args = get_args_parser().parse_args(torchrun_arguments(Topology(nproc=3), ["train", "--out", "o"]))
    assert args.standalone and args.nproc_per_node == "3" and args.nnodes == "1:1"
    assert args.module and args.training_script == "apprank"
    assert args.training_script_args == ["train", "--out", "o"]


def test_several_machines_meet_at_node_zero_with_their_own_rank() -> None:
    topology = Topology(nproc=2, nnodes=3, node_rank=2, master_addr="192.0.2.1", master_port=29600)
    args = get_args_parser().parse_args(torchrun_arguments(topology, ["train"]))
    assert not args.standalone
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("3", 2, "2")
    # static: torchrun keeps the node rank (the dynamic c10d backend would reorder nodes by host name)
    assert args.rdzv_backend == "static"
    assert (args.master_addr, args.master_port) == ("192.0.2.1", 29600)
    assert args.rdzv_conf == f"timeout={RENDEZVOUS_TIMEOUT_S}"
    assert args.max_restarts == 0
    assert topology.world == 6 and topology.needs_launch


def test_a_single_process_needs_no_launcher() -> None:
    assert not Topology().needs_launch
    assert Topology(master_addr="10.0.0.5").needs_launch  # an explicit rendezvous, even for one process


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nnodes": 2}, "needs --master-addr"),
        ({"nnodes": 2, "node_rank": 2, "master_addr": "h"}, "outside 0 .. 1"),
        ({"node_rank": -1}, "outside 0 .. 0"),
        ({"nproc": 0}, "at least 1"),
        ({"master_addr": "h", "master_port": 70000}, "not a TCP port"),
        ({"master_addr": "bad host!"}, "neither an IP address nor a host name"),
    ],
)
def test_impossible_topologies_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        Topology(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["node-0.train.apprank.svc.cluster.local", "192.0.2.1", "fd00::1", "n0"])
def test_host_names_and_addresses_are_accepted(host: str) -> None:
    assert Topology(nnodes=2, master_addr=host).master_addr == host


def test_the_cli_refuses_a_bad_topology_before_reading_any_data(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "apprank", "train", "--data", str(tmp_path / "missing"), "--out"]
    command += [str(tmp_path / "out"), "--nnodes", "2", "--node-rank", "1"]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}
    )
    assert result.returncode == 2
    assert "needs --master-addr" in result.stderr
    assert not (tmp_path / "out").exists()
