"""Offline metrics: AUC, logloss and calibration (mean predicted CTR / observed CTR).

Exact over all rows, in a few bytes a row: the streamed evaluation of a large split gathers every
score, and the metrics must not multiply that (scikit-learn's ``roc_auc_score`` and ``log_loss`` hold
several float64 copies, about 100 bytes a row). AUC is the Mann-Whitney rank sum with ties given their
average rank (what ``roc_auc_score`` computes), over the clipped CTRs; logloss and the means are
accumulated in float64 over chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

EPS = 1e-7
CHUNK = 1 << 20  # rows per float64 pass


def rank_auc(positive: npt.NDArray[np.bool_], scores: npt.NDArray[Any]) -> float:
    """ROC AUC of ``scores`` for the rows marked ``positive``, ties at their average rank."""
    n = int(scores.shape[0])
    count_pos = int(np.count_nonzero(positive))
    count_neg = n - count_pos
    if count_pos == 0 or count_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    ordered_pos = positive[order]
    del order
    new_value = np.empty(n, dtype=np.bool_)
    new_value[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_value[1:])
    starts = np.flatnonzero(new_value)
    del new_value, ordered
    counts = np.diff(np.append(starts, n))
    positives = np.add.reduceat(ordered_pos, starts, dtype=np.int64)
    average_rank = starts + (counts + 1) / 2.0  # 1-based
    rank_sum = float(np.dot(positives, average_rank))
    return (rank_sum - count_pos * (count_pos + 1) / 2.0) / (count_pos * count_neg)


def _clipped_order_key(ctr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A copy of ``ctr`` ordered and tied as ``clip(ctr, EPS, 1 - EPS)`` in float64 is (same dtype)."""
    key = np.array(ctr, copy=True)
    key[key >= np.float64(1 - EPS)] = 1  # float64 scalars: compared exactly, not in float32
    key[key <= np.float64(EPS)] = 0
    return key


def evaluate_predictions(labels: npt.NDArray[Any], ctr: npt.NDArray[Any]) -> dict[str, float]:
    """AUC, logloss, calibration and counts of one prediction set.

    Calibration is mean(ctr) / mean(label): 1.0 is perfectly calibrated on average.
    AUC is NaN when only one class is present. CTRs are clipped to [EPS, 1 - EPS].
    """
    y = np.asarray(labels)
    p = np.asarray(ctr)
    n = int(y.shape[0])
    if n == 0:
        nan = float("nan")
        return {
            "auc": nan,
            "logloss": nan,
            "mean_ctr": nan,
            "observed_ctr": nan,
            "calibration": nan,
            "rows": 0.0,
        }
    label_sum = ctr_sum = loss_sum = 0.0
    for start in range(0, n, CHUNK):
        part_y = y[start : start + CHUNK].astype(np.float64)
        part_p = np.clip(p[start : start + CHUNK].astype(np.float64), EPS, 1 - EPS)
        label_sum += float(part_y.sum())
        ctr_sum += float(part_p.sum())
        loss_sum -= float(np.dot(part_y, np.log(part_p)) + np.dot(1 - part_y, np.log1p(-part_p)))
    observed, mean_ctr = label_sum / n, ctr_sum / n
    both_classes = 0 < label_sum < n
    positive = y > 0.5
    return {
        "auc": rank_auc(positive, _clipped_order_key(p)) if both_classes else float("nan"),
        "logloss": loss_sum / n,
        "mean_ctr": mean_ctr,
        "observed_ctr": observed,
        "calibration": mean_ctr / observed if observed > 0 else float("nan"),
        "rows": float(n),
    }
