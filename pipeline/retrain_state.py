"""What a retrain run has done so far: ``state.json`` in its work directory, rewritten after each step."""

from __future__ import annotations

import ctypes
import gc
import os
import tempfile
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipeline.gate import GateDecision, Metrics
from service.rank.retrain_status import Outcome

STATE = "state.json"
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count (Linux: ``5`` into ``clear_refs``); False where unsupported."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def release_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the system (glibc's
    ``malloc_trim``), so that what a step freed is not carried as resident memory into the next one."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the pages stay with the allocator, nothing is lost


def peak_rss_mib() -> float | None:
    """This process's peak resident memory since start or the last ``reset_peak_rss`` (``VmHWM``), MiB."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class Step(StrEnum):
    """The steps of a retrain, in order."""

    EXPORT = "export"
    TRAIN = "train"
    EVALUATE = "evaluate"
    GATE = "gate"
    PUBLISH = "publish"
    RELOAD = "reload"


class RetrainState(BaseModel):
    """A run's progress and results (also the JSON summary, once finished)."""

    experiment: str
    model: str
    serving_version: str | None
    candidate_version: str
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    done: list[Step] = []
    seconds: dict[str, float] = {}
    peak_rss_mib: dict[str, float] = {}  # per step: the process's peak resident memory during it
    exported: dict[str, dict[str, int]] = {}
    vocabulary_growth: dict[str, tuple[int, int]] = {}
    candidate_metrics: Metrics | None = None
    serving_metrics: Metrics | None = None
    decision: GateDecision | None = None
    reload: dict[str, Any] | None = None
    outcome: Outcome | None = None
    reasons: list[str] = []
    finished: bool = False

    @property
    def last_step(self) -> str:
        return self.done[-1].value if self.done else "none"

    def finish_step(self, step: Step, seconds: float, work: Path, peak_mib: float | None = None) -> None:
        """Mark ``step`` done (with its duration and peak memory, when known) and save."""
        if step not in self.done:
            self.done.append(step)
        self.seconds[step.value] = round(self.seconds.get(step.value, 0.0) + seconds, 3)
        if peak_mib is not None:
            self.peak_rss_mib[step.value] = round(peak_mib, 1)
        self.save(work)

    def save(self, work: Path) -> None:
        """Replace ``work/state.json`` in one rename (a kill never leaves half a state)."""
        work.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".state.", suffix=".json", dir=work)
        with os.fdopen(handle, "w") as out:
            out.write(self.model_dump_json(indent=2) + "\n")
        os.replace(temp, work / STATE)

    @classmethod
    def load(cls, work: Path) -> RetrainState | None:
        path = work / STATE
        return cls.model_validate_json(path.read_bytes()) if path.is_file() else None
