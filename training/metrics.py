"""Offline metrics: AUC, logloss and calibration (mean predicted CTR / observed CTR).

Exact over all rows, in a few bytes a row: the streamed evaluation of a large split gathers every
score, and the metrics must not multiply that (scikit-learn's ``roc_auc_score`` and ``log_loss`` hold
several float64 copies, about 100 bytes a row). AUC is the Mann-Whitney statistic with ties counted
one half (what ``roc_auc_score`` computes), over the clipped CTRs, by binary search in the sorted
negative scores; logloss and the means are accumulated in float64 over chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

EPS = 1e-7
CHUNK = 1 << 20  # rows per float64 pass


def rank_auc(
    positive: npt.NDArray[np.bool_], scores: npt.NDArray[Any],
    prepare: Callable[[npt.NDArray[Any]], None] | None = None,
) -> float:  # fmt: skip
    """ROC AUC of ``scores`` for the rows marked ``positive``, ties counted as one half.

    That is the Mann-Whitney statistic with ties at their average rank (what ``roc_auc_score``
    computes), counted as: for every positive, the negatives scored below it plus half those scored
    equal, found by binary search in the sorted negative scores. It holds one sorted copy of the
    scores (the positives' and the negatives' apart, in their own dtype) and per chunk of positives
    two index vectors: about 5 bytes a row for float32 scores, where an argsort would take 8 a row
    for the order alone and more for the tie groups. The counts are exact integers. ``prepare``, when
    given, changes each of the two copies in place before they are sorted (the clipping of CTRs), so
    that the caller need not copy the scores first.
    """
    n = int(scores.shape[0])
    count_pos = int(np.count_nonzero(positive))
    count_neg = n - count_pos
    if count_pos == 0 or count_neg == 0:
        return float("nan")
    negatives, positives = scores[~positive], scores[positive]
    for side in (negatives, positives):
        if prepare is not None:
            prepare(side)
        side.sort()  # in order, the binary searches walk the negatives forwards (cache friendly)
    below = ties = 0
    for start in range(0, count_pos, CHUNK):
        part = positives[start : start + CHUNK]
        left = np.searchsorted(negatives, part, side="left")
        right = np.searchsorted(negatives, part, side="right")
        below += int(left.sum(dtype=np.int64))
        ties += int((right - left).sum(dtype=np.int64))
    return (below + ties / 2) / (count_pos * count_neg)


def _clip_order_key(ctr: npt.NDArray[Any]) -> None:
    """Set ``ctr`` (in place) to values ordered and tied as ``clip(ctr, EPS, 1 - EPS)`` in float64 are."""
    ctr[ctr >= np.float64(1 - EPS)] = 1  # float64 scalars: compared exactly, not in float32
    ctr[ctr <= np.float64(EPS)] = 0


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
        "auc": rank_auc(positive, p, _clip_order_key) if both_classes else float("nan"),
        "logloss": loss_sum / n,
        "mean_ctr": mean_ctr,
        "observed_ctr": observed,
        "calibration": mean_ctr / observed if observed > 0 else float("nan"),
        "rows": float(n),
    }
