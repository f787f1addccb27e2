"""What a retrain run has done so far: ``state.json`` in its work directory, rewritten after each step."""

from __future__ import annotations

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

    def finish_step(self, step: Step, seconds: float, work: Path) -> None:
        """Mark ``step`` done (with its duration) and save."""
        if step not in self.done:
            self.done.append(step)
        self.seconds[step.value] = round(self.seconds.get(step.value, 0.0) + seconds, 3)
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
