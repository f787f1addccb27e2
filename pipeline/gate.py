"""The retrain's gate: may the candidate replace the serving version?

Both are scored on the same held-out day (the window's last ``holdout_days``), each with its own encoder
through ONNX Runtime, as the service would. The candidate is refused, with every reason written out,
when

* the held-out day is too small to tell (fewer rows or downloads than the minimums);
* its AUC is below the serving version's by more than ``max_auc_drop``;
* its logloss is above the serving version's by more than ``max_logloss_increase``;
* its calibration (mean predicted CTR / observed CTR) is off 1 by more than ``max_calibration_error``.

With no serving version (the first retrain of a model) only the absolute rules apply.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Metrics = dict[str, float]


class GateConfig(BaseModel):
    """The margins (the ``gate`` section of a retrain config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_auc_drop: Annotated[float, Field(ge=0.0)] = 0.005
    max_logloss_increase: Annotated[float, Field(ge=0.0)] = 0.01
    max_calibration_error: Annotated[float, Field(gt=0.0)] = 0.2
    min_holdout_rows: Annotated[int, Field(ge=1)] = 200
    min_holdout_positives: Annotated[int, Field(ge=1)] = 10


class GateDecision(BaseModel):
    """What the gate decided, why, and on which figures."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: list[str]
    candidate: Metrics
    serving: Metrics | None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


NAN = float("nan")


def _relative_rules(candidate: Metrics, serving: Metrics, config: GateConfig) -> list[str]:
    """The comparisons with the serving version (a NaN on either side compares as nothing)."""
    reasons = []
    auc, serving_auc = candidate.get("auc", NAN), serving.get("auc", NAN)
    if auc < serving_auc - config.max_auc_drop:
        reasons.append(
            f"AUC {auc:.4f} is below the serving version's {serving_auc:.4f} "
            f"by more than {config.max_auc_drop:g}"
        )
    loss, serving_loss = candidate.get("logloss", NAN), serving.get("logloss", NAN)
    if loss > serving_loss + config.max_logloss_increase:
        reasons.append(
            f"logloss {loss:.4f} is above the serving version's {serving_loss:.4f} "
            f"by more than {config.max_logloss_increase:g}"
        )
    return reasons


def decide(candidate: Metrics, serving: Metrics | None, config: GateConfig) -> GateDecision:
    """Apply the rules to the held-out figures of the candidate and the serving version."""
    reasons = []
    rows, positives = (
        candidate.get("rows", 0.0),
        candidate.get("rows", 0.0) * candidate.get("observed_ctr", 0.0),
    )
    if rows < config.min_holdout_rows or round(positives) < config.min_holdout_positives:
        reasons.append(
            f"the held-out day has {rows:.0f} rows and {positives:.0f} downloads: fewer than the "
            f"{config.min_holdout_rows} rows and {config.min_holdout_positives} downloads needed to judge"
        )
    if not _finite(candidate.get("auc")) or not _finite(candidate.get("logloss")):
        reasons.append(f"the candidate's held-out AUC or logloss is not a number ({candidate})")
    calibration = candidate.get("calibration", float("nan"))
    if not _finite(calibration) or abs(calibration - 1.0) > config.max_calibration_error:
        reasons.append(
            f"calibration {calibration:.3f} (mean predicted / observed CTR) is off 1 by more than "
            f"{config.max_calibration_error:g}"
        )
    if serving is not None:
        reasons += _relative_rules(candidate, serving, config)
    return GateDecision(passed=not reasons, reasons=reasons, candidate=candidate, serving=serving)
