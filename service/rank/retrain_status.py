"""The outcome of a model's last ``apprank retrain``: a small JSON file on the shared models volume.

The retrain runs as its own job (a CronJob, a compose service), not in a service worker, so it leaves
``models/NAME/retrain.json`` behind (written atomically, on success and on failure alike) and every
worker of every replica publishes it as Prometheus gauges. A file, not a directory, so no reload ever
takes it for a version.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from service.metrics import RETRAIN_FINISHED, RETRAIN_OUTCOME

log = logging.getLogger(__name__)
STATUS_FILE = "retrain.json"


class Outcome(StrEnum):
    """How a retrain ended: a new version serves, the gate refused the candidate, or it failed."""

    PUBLISHED = "published"
    REFUSED = "refused"
    FAILED = "failed"


class RetrainStatus(BaseModel):
    """What ``retrain.json`` holds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    outcome: Outcome
    finished_at: datetime
    serving_version: str | None = None
    candidate_version: str | None = None
    reasons: list[str] = []


def write_status(model_dir: Path, status: RetrainStatus) -> Path:
    """Replace ``model_dir/retrain.json`` in one rename."""
    model_dir.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".retrain.", suffix=".json", dir=model_dir)
    with os.fdopen(handle, "w") as out:
        out.write(status.model_dump_json(indent=2) + "\n")
    os.replace(temp, model_dir / STATUS_FILE)
    return model_dir / STATUS_FILE


def read_status(model_dir: Path) -> RetrainStatus | None:
    """The last retrain's status, or None when there is none (or it cannot be read)."""
    path = model_dir / STATUS_FILE
    try:
        return RetrainStatus.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as error:
        log.warning("%s: unreadable retrain status: %s", path, error)
        return None


def publish_retrain_status(name: str, model_dir: Path) -> None:
    """Set the retrain gauges of ``name`` from its status file (nothing when no retrain ran yet)."""
    status = read_status(model_dir)
    if status is None:
        return
    for outcome in Outcome:
        RETRAIN_OUTCOME.labels(name, outcome.value).set(1.0 if status.outcome is outcome else 0.0)
    RETRAIN_FINISHED.labels(name).set(status.finished_at.timestamp())
