"""The lean exact metrics agree with scikit-learn's (AUC with ties and clipped extremes, logloss)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from training.metrics import CHUNK, EPS, evaluate_predictions


def _reference(y: np.ndarray, ctr: np.ndarray) -> dict[str, float]:
    p = np.clip(np.asarray(ctr, dtype=np.float64), EPS, 1 - EPS)
    y64 = y.astype(np.float64)
    return {
        "auc": float(roc_auc_score(y64, p)),
        "logloss": float(log_loss(y64, p, labels=[0, 1])),
        "mean_ctr": float(p.mean()),
        "observed_ctr": float(y64.mean()),
    }


@pytest.mark.parametrize("rows", [7, 5_000, CHUNK + 12_345])
def test_agrees_with_sklearn_with_ties_and_extremes(rows: int) -> None:
    rng = np.random.default_rng(rows)
    y = (rng.random(rows) < 0.3).astype(np.float32)
    ctr = np.round(rng.random(rows), 2).astype(np.float32)  # many ties
    ctr[: rows // 7] = rng.choice(np.array([0.0, 1e-9, 1e-7, 0.99999994, 1.0], np.float32), rows // 7)
    got, want = evaluate_predictions(y, ctr), _reference(y, ctr)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert got["rows"] == rows and got["calibration"] == pytest.approx(
        want["mean_ctr"] / want["observed_ctr"]
    )


def test_float64_scores_and_one_class() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(1_000) < 0.5).astype(np.float64)
    ctr = rng.random(1_000)
    assert evaluate_predictions(y, ctr)["auc"] == pytest.approx(roc_auc_score(y, ctr), rel=1e-12)
    assert np.isnan(evaluate_predictions(np.zeros(10), ctr[:10])["auc"])
    assert np.isnan(evaluate_predictions(np.zeros(0), np.zeros(0))["logloss"])
