"""Two machines for real: one training node in each of two network namespaces, over TCP on a veth pair.

Node 0 (192.0.2.1) hosts torchrun's rendezvous; node 1 (192.0.2.2) joins it. On one prepared dataset
(a frappe_ctr subset, uneven: the last row group is short) the run must train to the test AUC of one
process, each node must read only its own row groups, the two must read every row once per epoch, and
rank 0 alone writes the bundle. What a rank read comes from the loader's log line per epoch.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.bundle import read_bundle
from tests import netns
from tests.conftest import require
from training.prepared.reader import PreparedDataset, assigned, epoch_order

REPO = Path(__file__).resolve().parents[2]
PORT = 29400  # any port: the namespaces are fresh, nothing else listens in them
SETS = ("model=fm", "epochs=1", "batch_size=1024", "threads=1", "precision=fp32")
PREPARE_SETS = ("max_rows=40000", "prepare.row_group_rows=4096")  # 10 row groups, the last of 3,136 rows
TIMEOUT_S = 300
READ = re.compile(r"rank (\d+)/(\d+) train epoch (\d+): read (\d+) row groups, (\d+) rows, (\d+) steps")


@pytest.fixture
def pair() -> Iterator[netns.VethPair]:
    """Two fresh namespaces joined by a veth pair, removed when the test ends (passed or failed)."""
    missing = netns.available()
    require(missing is None, str(missing))
    netns.remove_stale()
    pair = netns.VethPair()
    try:
        pair.create()
    except netns.NetnsError as error:
        require(False, f"network namespaces ({error})")
    yield pair
    pair.remove()


def _train_command(data: Path, out: Path, *launch: str) -> list[str]:
    command = [sys.executable, "-m", "apprank", "train", "--data", str(data), "--out", str(out)]
    return command + [arg for item in SETS for arg in ("--set", item)] + list(launch)


def _run_all(commands: list[list[str]], logs: list[Path]) -> None:
    """Run every command at once; the first failure (or the deadline) ends the others and fails the test.

    Polls rather than waiting on one process after another: a node that fails early leaves its peer
    waiting for it, and that peer must not hold the test until the deadline.
    """
    processes: list[subprocess.Popen[bytes]] = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("wb") as sink:
            processes.append(subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in processes) and not any(p.returncode for p in processes):
            if time.monotonic() > deadline:
                pytest.fail(f"the runs did not finish within {TIMEOUT_S} s")
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()  # torchrun ends its workers on SIGTERM; the fixture kills what is left
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, f"{log.name} exited {process.returncode}:\n{log.read_text()[-3000:]}"


def test_namespaces_reach_each_other_and_nothing_else(pair: netns.VethPair) -> None:
    for node in (pair.a, pair.b):
        routes = pair.routes(node)
        assert routes and all(route.startswith(netns.SUBNET) for route in routes), routes  # no default route
    probe = f"import socket; socket.create_connection(('{pair.a.address}', {PORT}), timeout=5).close()"
    server = subprocess.Popen(
        pair.a.command([sys.executable, "-c", _LISTEN.format(address=pair.a.address, port=PORT)]),
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"listening"
        subprocess.run(pair.b.command([sys.executable, "-c", probe]), check=True, timeout=30)
        # the host itself has no route to the namespaces' subnet through the pair
        reach = subprocess.run([sys.executable, "-c", probe.replace("5)", "1)")], check=False, timeout=30)
        assert reach.returncode != 0
    finally:
        server.kill()
        server.wait()


_LISTEN = """
import socket
server = socket.create_server(('{address}', {port}))
print('listening', flush=True)
server.accept()[0].close()
"""


def _prepare(data: Path, out: Path) -> PreparedDataset:
    command = [sys.executable, "-m", "apprank", "prepare", "--data", str(data), "--out", str(out)]
    command += [arg for item in PREPARE_SETS for arg in ("--set", item)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=TIMEOUT_S)
    return PreparedDataset(out)


def _reads(log: Path) -> list[tuple[int, ...]]:
    """(rank, world, epoch, row groups, rows, steps) of every training epoch the log reports."""
    return [tuple(int(value) for value in match) for match in READ.findall(log.read_text())]


def test_two_nodes_train_like_one_process(pair: netns.VethPair, data_dir: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    dataset = _prepare(data_dir / "frappe_ctr", prepared)
    launch = ("--nnodes", "2", "--master-addr", pair.a.address, "--master-port", str(PORT), "--nproc", "1")
    commands = [_train_command(prepared, tmp_path / "one", "--nproc", "1")]
    for rank, node in enumerate((pair.a, pair.b)):
        argv = _train_command(prepared, tmp_path / f"node{rank}", *launch, "--node-rank", str(rank))
        # gloo binds to the interface named here (the host name resolves to an address the namespace lacks)
        commands.append(node.command(argv, {"GLOO_SOCKET_IFNAME": node.interface}))
    logs = [tmp_path / name for name in ("one.log", "node0.log", "node1.log")]
    _run_all(commands, logs)
    single = read_bundle(tmp_path / "one").manifest.metrics
    double = read_bundle(tmp_path / "node0").manifest.metrics
    assert not (tmp_path / "node1").exists()  # rank 0 alone writes the bundle
    assert single["training"]["streamed"] == double["training"]["streamed"] == 1.0
    assert abs(single["test"]["auc"] - double["test"]["auc"]) <= 0.002, (single["test"], double["test"])
    assert double["test"]["auc"] > 0.85  # it learned
    _check_reads(dataset, logs)


def _check_reads(dataset: PreparedDataset, logs: list[Path]) -> None:
    """Each node read only its own row groups, and the two together every row of the epoch once."""
    groups = dataset.row_groups("train")
    rows = dataset.rows("train")
    assert _reads(logs[0]) == [(0, 1, 1, len(groups), rows, _reads(logs[0])[0][5])]
    per_node = [_reads(log) for log in logs[1:]]
    for rank, reads in enumerate(per_node):
        own = assigned(groups, rank, 2)
        # one epoch, this node's rank only: exactly its row groups' count and rows
        assert reads == [(rank, 2, 1, len(own), sum(g.rows for g in own), reads[0][5])], reads
    assert per_node[0][0][5] == per_node[1][0][5]  # the same number of steps on both nodes
    assert per_node[0][0][4] != per_node[1][0][4]  # uneven: the short row group went to one node only
    assert sum(reads[0][4] for reads in per_node) == rows  # every row once over the two nodes
    # the assignment the loader reads by: a partition of the row groups, in a per-epoch seeded order
    owned = [{g.index for g in epoch_order(groups, 1, 1, rank, 2)} for rank in range(2)]
    assert owned[0] | owned[1] == {g.index for g in groups} and not owned[0] & owned[1]


def test_namespaces_of_a_dead_run_are_removed_and_a_live_runs_kept(pair: netns.VethPair) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.PREFIX}{dead.pid}-abcdef-a"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert netns.remove_stale() == [stale]
    finally:
        if stale in netns.namespaces():
            subprocess.run(["ip", "netns", "delete", stale], check=False)
    assert {pair.a.namespace, pair.b.namespace} <= set(netns.namespaces())  # ours: this process lives
    pair.remove()
    pair.remove()  # idempotent: the fixture's finalizer runs it again
    assert not {pair.a.namespace, pair.b.namespace} & set(netns.namespaces())
