"""The torchrun command line of ``apprank train``: one machine (``--nproc``) or several (``--nnodes``).

One machine runs torchrun ``--standalone`` (a private rendezvous on a free local port). Several machines
use torchrun's *static* rendezvous: node ``--node-rank 0`` hosts the c10d TCP store at
``--master-addr:--master-port`` and every other node connects to it. Static rather than the dynamic
``c10d`` backend because the dynamic one orders nodes by host name and ignores ``--node-rank``; here the
node a user calls 0 holds global rank 0, the rank that evaluates and writes the bundle, so the user
knows on which machine (and under which ``--out``) the bundle appears.

Pure functions (no torch import): the CLI validates a topology before anything heavy starts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# How long a node waits for the others to join the rendezvous (torchrun's ``timeout`` setting): long
# enough for a scheduler that starts the pods of a job minutes apart, short enough to end a lost run.
RENDEZVOUS_TIMEOUT_S = 900
DEFAULT_MASTER_PORT = 29500
# The options that choose the launch; the launched children must not see them (they would relaunch).
LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port")


class LaunchError(ValueError):
    """The launch options do not describe a runnable group of processes."""


@dataclass(frozen=True)
class Topology:
    """Where the processes of one training run live.

    Attributes:
        nproc: processes on this machine (one per GPU, or a few on a CPU).
        nnodes: machines taking part (1: this one only).
        node_rank: this machine's place, 0 .. nnodes - 1 (0 writes the bundle).
        master_addr: host or IP of node 0, reachable from every node (needed when nnodes > 1).
        master_port: TCP port of the rendezvous on node 0.
    """

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = DEFAULT_MASTER_PORT

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise LaunchError(f"--nproc ({self.nproc}) and --nnodes ({self.nnodes}) must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise LaunchError(f"--node-rank {self.node_rank} is outside 0 .. {self.nnodes - 1} (--nnodes)")
        if self.nnodes > 1 and not self.master_addr:
            raise LaunchError("--nnodes > 1 needs --master-addr: the host or IP of node 0")
        if not 1 <= self.master_port <= 65535:
            raise LaunchError(f"--master-port {self.master_port} is not a TCP port (1 .. 65535)")
        if self.master_addr is not None:
            _check_host(self.master_addr)

    @property
    def world(self) -> int:
        """Processes in the whole group."""
        return self.nproc * self.nnodes

    @property
    def needs_launch(self) -> bool:
        """True when this command must re-run itself under torchrun."""
        return self.world > 1 or self.master_addr is not None


def _check_host(host: str) -> None:
    """A host name or an IP literal; an IPv6 literal goes without brackets (torchrun adds none)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
        raise LaunchError(f"--master-addr {host!r} is neither an IP address nor a host name")


def torchrun_arguments(topology: Topology, argv: list[str]) -> list[str]:
    """torchrun's arguments that run ``python -m apprank <argv>`` in every process of ``topology``."""
    if topology.nnodes == 1 and topology.master_addr is None:
        placement = ["--standalone"]
    else:
        placement = [
            f"--nnodes={topology.nnodes}",
            f"--node-rank={topology.node_rank}",
            "--rdzv-backend=static",
            f"--master-addr={topology.master_addr}",
            f"--master-port={topology.master_port}",
            f"--rdzv-conf=timeout={RENDEZVOUS_TIMEOUT_S}",
        ]
    processes = [f"--nproc-per-node={topology.nproc}", "--max-restarts=0"]
    return [*placement, *processes, "--module", "apprank", *argv]


def without_launch_options(argv: list[str]) -> list[str]:
    """The command line minus the launch options (``--nproc 2`` or ``--nproc=2`` forms)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in LAUNCH_OPTIONS)):
            out.append(arg)
    return out
