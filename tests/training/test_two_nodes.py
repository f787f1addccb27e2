"""Two machines for real: one training node in each of two network namespaces, over TCP on a veth pair.

Node 0 (192.0.2.1) hosts torchrun's rendezvous; node 1 (192.0.2.2) joins it. The run must train to the
test AUC of one process on the same data, and rank 0 alone writes the bundle.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.bundle import read_bundle
from tests import netns
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
PORT = 29400  # any port: the namespaces are fresh, nothing else listens in them
SETS = ("model=fm", "epochs=1", "max_rows=20000", "batch_size=1024", "threads=1", "precision=fp32")
TIMEOUT_S = 300


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


def test_two_nodes_train_like_one_process(pair: netns.VethPair, data_dir: Path, tmp_path: Path) -> None:
    data = data_dir / "frappe_ctr"
    launch = ("--nnodes", "2", "--master-addr", pair.a.address, "--master-port", str(PORT), "--nproc", "1")
    commands = [_train_command(data, tmp_path / "one", "--nproc", "1")]
    for rank, node in enumerate((pair.a, pair.b)):
        argv = _train_command(data, tmp_path / f"node{rank}", *launch, "--node-rank", str(rank))
        # gloo binds to the interface named here (the host name resolves to an address the namespace lacks)
        commands.append(node.command(argv, {"GLOO_SOCKET_IFNAME": node.interface}))
    _run_all(commands, [tmp_path / name for name in ("one.log", "node0.log", "node1.log")])
    single = read_bundle(tmp_path / "one").manifest.metrics["test"]
    double = read_bundle(tmp_path / "node0").manifest.metrics["test"]
    assert not (tmp_path / "node1").exists()  # rank 0 alone writes the bundle
    assert abs(single["auc"] - double["auc"]) <= 0.002, (single, double)
    assert double["auc"] > 0.85  # it learned


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
