"""Peak memory of benchmark processes, read from ``/proc`` (shared by the benches).

``VmHWM`` (the resident high-water mark of one process, its threads included), not ``getrusage``'s
``ru_maxrss``: Linux carries ``ru_maxrss`` over ``exec`` from the forked parent, so a child of a bench
that grew large itself would report the bench's peak, not its own.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

POLL_S = 0.05


def high_water_mib(pid: int | str = "self") -> float:
    """The peak resident set size (``VmHWM``) of this process or of ``pid``, MiB."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in {status}")


def run_peak(command: Sequence[str], cwd: Path | None = None) -> tuple[float, float]:
    """Run ``command`` (no shell: the child is the measured process); (wall s, its own peak RSS MiB).

    ``VmHWM`` is polled every ``POLL_S`` while the child runs (it only grows, so the last reading is
    the peak up to then). Raises ``CalledProcessError`` when the child fails.
    """
    started = time.perf_counter()
    process = subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.DEVNULL)
    peak = 0.0
    while process.poll() is None:
        try:
            peak = max(peak, high_water_mib(process.pid))
        except (OSError, RuntimeError):  # exiting: /proc/<pid>/status is gone or has no VmHWM
            pass
        time.sleep(POLL_S)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, list(command))
    return time.perf_counter() - started, peak
