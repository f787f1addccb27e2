"""Two Linux network namespaces joined by a veth pair: two "machines" on one host, for multi-node tests.

Each namespace gets one end of the pair with an address from 192.0.2.0/24 (TEST-NET-1, reserved for
documentation and tests) and its own loopback. Nothing else is attached: no default route and no link
to the host's interfaces, so the processes started inside can reach each other and nothing else.

Names carry the creating process's id, so namespaces left behind by a run that was killed are found
and removed by the next run (``remove_stale``) while a concurrent run's namespaces are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "apprank-t"
SUBNET = "192.0.2.0/24"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+-[ab]$")


class NetnsError(RuntimeError):
    """An ``ip`` command failed (its stderr is in the message)."""


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def available() -> str | None:
    """Why namespaces cannot be made here (None when they can): root and iproute2 are needed."""
    if shutil.which("ip") is None:
        return "iproute2 (the `ip` command)"
    if os.geteuid() != 0:
        return "root (network namespaces)"
    return None


def namespaces() -> list[str]:
    """Names of the network namespaces that exist now."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def kill_inside(namespace: str) -> list[int]:
    """SIGKILL every process inside ``namespace`` (a machine lost); returns their ids.

    torchrun starts its workers in sessions of their own, so ending the launching process or its
    process group would leave them running: the namespace is what they all share.
    """
    pids = [int(pid) for pid in _ip("netns", "pids", namespace).split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def delete(namespace: str) -> None:
    """End what runs inside ``namespace``, then delete it."""
    kill_inside(namespace)
    _ip("netns", "delete", namespace)


def remove_stale() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone; returns their names."""
    stale = [name for name in namespaces() if (m := _NAME.match(name)) and not _alive(int(m.group(1)))]
    for name in stale:
        delete(name)
    return stale


@dataclass(frozen=True)
class Node:
    """One namespace: its name, the veth end inside it and that end's address."""

    namespace: str
    interface: str
    address: str

    def command(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """``argv`` run inside the namespace (``env`` added to the inherited environment)."""
        assignments = [f"{key}={value}" for key, value in (env or {}).items()]
        return ["ip", "netns", "exec", self.namespace, "env", *assignments, *argv]


class VethPair:
    """Two namespaces, ``a`` (192.0.2.1) and ``b`` (192.0.2.2), joined by one veth pair.

    Use as a context manager, or call ``remove`` in a finalizer: removal deletes both namespaces
    (the veth pair goes with them) and is safe to repeat.
    """

    def __init__(self) -> None:
        token = secrets.token_hex(3)
        base = f"{PREFIX}{os.getpid()}-{token}"
        # interface names are limited to 15 characters
        self.a = Node(f"{base}-a", f"ar{token}a", "192.0.2.1")
        self.b = Node(f"{base}-b", f"ar{token}b", "192.0.2.2")
        self._created: list[str] = []

    def create(self) -> VethPair:
        """Make the namespaces, the pair and the addresses; on any failure, undo what was made."""
        try:
            for node in (self.a, self.b):
                _ip("netns", "add", node.namespace)
                self._created.append(node.namespace)
            _ip("link", "add", self.a.interface, "type", "veth", "peer", "name", self.b.interface)
            for node in (self.a, self.b):
                _ip("link", "set", node.interface, "netns", node.namespace)
                _ip("-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", node.interface)
                _ip("-n", node.namespace, "link", "set", node.interface, "up")
                _ip("-n", node.namespace, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def routes(self, node: Node) -> list[str]:
        """The namespace's routing table, one route a line."""
        return [line.strip() for line in _ip("-n", node.namespace, "route", "show").splitlines() if line]

    def kill(self, node: Node) -> list[int]:
        """SIGKILL every process inside ``node``'s namespace; returns their ids."""
        return kill_inside(node.namespace)

    def remove(self) -> None:
        """End the processes inside, delete both namespaces (idempotent); the veth pair goes with them."""
        existing = set(namespaces())
        for node in (self.a, self.b):
            if node.namespace in existing and node.namespace in self._created:
                delete(node.namespace)
        if self.a.interface in _ip("link", "show"):  # created but not yet moved into a namespace
            _ip("link", "delete", self.a.interface)
        self._created.clear()

    def __enter__(self) -> VethPair:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.remove()
