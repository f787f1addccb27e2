"""Offline metrics: AUC, logloss and calibration (mean predicted CTR / observed CTR)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import log_loss, roc_auc_score

EPS = 1e-7


def evaluate_predictions(labels: npt.NDArray[Any], ctr: npt.NDArray[Any]) -> dict[str, float]:
    """AUC, logloss, calibration and counts of one prediction set.

    Calibration is mean(ctr) / mean(label): 1.0 is perfectly calibrated on average.
    AUC is NaN when only one class is present.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(ctr, dtype=np.float64), EPS, 1 - EPS)
    both_classes = 0 < y.sum() < y.size
    observed = float(y.mean()) if y.size else float("nan")
    return {
        "auc": float(roc_auc_score(y, p)) if both_classes else float("nan"),
        "logloss": float(log_loss(y, p, labels=[0, 1])) if y.size else float("nan"),
        "mean_ctr": float(p.mean()) if y.size else float("nan"),
        "observed_ctr": observed,
        "calibration": float(p.mean() / observed) if observed > 0 else float("nan"),
        "rows": float(y.size),
    }
