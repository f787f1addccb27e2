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
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.bundle import read_bundle
from tests import netns
from tests.conftest import require, wait_until
from training.config import TrainConfig
from training.prepared.reader import PreparedDataset, assigned, epoch_order

REPO = Path(__file__).resolve().parents[2]
PORT = 29400  # any port: the namespaces are fresh, nothing else listens in them
# the AUCs and the reads are the point: the bundles export model.onnx only (serving_graphs=false)
BASE = ("model=fm", "batch_size=1024", "threads=1", "precision=fp32", "serving_graphs=false")
# no epoch can gain 1.0 AUC: epoch 2 is stale and the run stops there, on every rank or the run hangs
SETS = (*BASE, "epochs=5", "early_stopping.patience=1", "early_stopping.min_delta=1")
ENDLESS = (*BASE, "epochs=10000", "early_stopping.patience=10000")
PREPARE_SETS = ("max_rows=40000", "prepare.row_group_rows=4096")  # 10 row groups, the last of 3,136 rows
TIMEOUT_S = 300
SEED: int = TrainConfig.model_fields["seed"].default  # the runs' seed: none is set
READ = re.compile(
    r"rank (\d+)/(\d+) train epoch (\d+): read (\d+) row groups, (\d+) rows, (\d+) steps; "
    r"row groups read: ([\d,]*)"
)


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


def _train_command(data: Path, out: Path, *launch: str, sets: tuple[str, ...] = SETS) -> list[str]:
    command = [sys.executable, "-m", "apprank", "train", "--data", str(data), "--out", str(out)]
    return command + [arg for item in sets for arg in ("--set", item)] + list(launch)


def _node_commands(
    pair: netns.VethPair, data: Path, out: Path, sets: tuple[str, ...] = SETS
) -> list[list[str]]:
    """``apprank train`` of node 0 in namespace a and node 1 in namespace b, bundles at ``out``/node<r>."""
    launch = ("--nnodes", "2", "--master-addr", pair.a.address, "--master-port", str(PORT), "--nproc", "1")
    commands = []
    for rank, node in enumerate((pair.a, pair.b)):
        argv = _train_command(data, out / f"node{rank}", *launch, "--node-rank", str(rank), sets=sets)
        # gloo binds to the interface named here (the host name resolves to an address the namespace lacks)
        commands.append(node.command(argv, {"GLOO_SOCKET_IFNAME": node.interface}))
    return commands


def _start(commands: list[list[str]], logs: list[Path]) -> list[subprocess.Popen[bytes]]:
    processes = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("wb") as sink:
            processes.append(subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT))
    return processes


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """End what still runs: torchrun ends its workers on SIGTERM (the fixture kills what is left)."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _run_all(commands: list[list[str]], logs: list[Path]) -> None:
    """Run every command at once; the first failure (or the deadline) ends the others and fails the test.

    Polls rather than waiting on one process after another: a node that fails early leaves its peer
    waiting for it, and that peer must not hold the test until the deadline.
    """
    processes = _start(commands, logs)

    def ended() -> bool:
        return all(p.poll() is not None for p in processes) or any(p.returncode for p in processes)

    try:
        wait_until(ended, TIMEOUT_S, "the runs finishing", interval=0.2)
    finally:
        _stop(processes)
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


@pytest.fixture(scope="module")
def prepared(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frappe_ctr subset through ``apprank prepare``, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("two-nodes") / "prepared"
    command = [sys.executable, "-m", "apprank", "prepare", "--data", str(data_dir / "frappe_ctr")]
    command += ["--out", str(out), *[arg for item in PREPARE_SETS for arg in ("--set", item)]]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=TIMEOUT_S)
    return out


def _reads(log: Path) -> list[tuple[int, ...]]:
    """(rank, world, epoch, row groups, rows, steps) of every training epoch the log reports."""
    return [tuple(int(value) for value in match[:6]) for match in READ.findall(log.read_text())]


def _groups_read(log: Path) -> list[list[int]]:
    """The global indices of the row groups read in each training epoch the log reports, in read order."""
    return [[int(i) for i in match[6].split(",") if i] for match in READ.findall(log.read_text())]


@pytest.mark.slow
def test_two_nodes_train_like_one_process(pair: netns.VethPair, prepared: Path, tmp_path: Path) -> None:
    commands = [_train_command(prepared, tmp_path / "one", "--nproc", "1")]
    commands += _node_commands(pair, prepared, tmp_path)
    logs = [tmp_path / name for name in ("one.log", "node0.log", "node1.log")]
    _run_all(commands, logs)
    single = read_bundle(tmp_path / "one").manifest.metrics
    double = read_bundle(tmp_path / "node0").manifest.metrics
    assert not (tmp_path / "node1").exists()  # rank 0 alone writes the bundle
    assert single["training"]["streamed"] == double["training"]["streamed"] == 1.0
    assert abs(single["test"]["auc"] - double["test"]["auc"]) <= 0.002, (single["test"], double["test"])
    assert double["test"]["auc"] > 0.85  # it learned
    assert single["training"]["epochs"] == double["training"]["epochs"] == 2  # stopped early, together
    _check_reads(PreparedDataset(prepared), logs)


@pytest.mark.slow
def test_a_lost_node_fails_the_run_instead_of_hanging(
    pair: netns.VethPair, prepared: Path, tmp_path: Path
) -> None:
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    processes = _start(_node_commands(pair, prepared, tmp_path, ENDLESS), logs)
    try:
        wait_until(
            lambda: processes[0].poll() is not None or "epoch 2:" in logs[0].read_text(),
            TIMEOUT_S,
            "node 0 training",
        )
        assert processes[0].poll() is None, logs[0].read_text()[-3000:]
        assert pair.kill(pair.b)  # node 1's machine is gone: its launcher and its worker
        wait_until(lambda: processes[0].poll() is not None, 120, "node 0 to give up on the lost node")
    finally:
        _stop(processes)
    assert processes[0].returncode != 0
    assert pair.b.address in logs[0].read_text()  # the error names the peer it lost
    assert not (tmp_path / "node0").exists()  # no bundle from a broken run


def _check_reads(dataset: PreparedDataset, logs: list[Path]) -> None:
    """Each epoch, each node read only its own row groups, and the two together every row once."""
    groups = dataset.row_groups("train")
    rows = dataset.rows("train")
    epochs = (1, 2)
    single = _reads(logs[0])
    assert [read[:5] for read in single] == [(0, 1, epoch, len(groups), rows) for epoch in epochs]
    per_node = [_reads(log) for log in logs[1:]]
    for rank, reads in enumerate(per_node):
        own = assigned(groups, rank, 2)
        # this node's rank only, every epoch: exactly its row groups' count and rows
        assert [read[:5] for read in reads] == [
            (rank, 2, epoch, len(own), sum(g.rows for g in own)) for epoch in epochs
        ], reads
    assert {read[5] for reads in per_node for read in reads} == {per_node[0][0][5]}  # same steps everywhere
    assert per_node[0][0][4] != per_node[1][0][4]  # uneven: the short row group went to one node only
    assert [sorted(ids) for ids in _groups_read(logs[0])] == [[g.index for g in groups]] * len(epochs)
    read = [_groups_read(log) for log in logs[1:]]  # [node][epoch] -> row-group ids in read order
    for epoch in epochs:
        assert sum(reads[epoch - 1][4] for reads in per_node) == rows  # every row once over the nodes
        ids = [read[rank][epoch - 1] for rank in range(2)]
        for rank in range(2):
            assert ids[rank] and all(index % 2 == rank for index in ids[rank]), (rank, ids[rank])
            # in the epoch's seeded order, the one the loader computes from the seed alone
            assert ids[rank] == [g.index for g in epoch_order(groups, SEED, epoch, rank, 2)]
        # the union is every row group, each exactly once
        assert sorted(ids[0] + ids[1]) == [g.index for g in groups], ids
    assert read[0][0] != read[0][1]  # reshuffled by the seed each epoch


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
