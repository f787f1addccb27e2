"""``top_order`` against a sort oracle: best score first, equal scores by app_id, any k."""

from __future__ import annotations

import numpy as np

from service.ranker import top_order


def test_top_order_equals_sorting_by_score_then_app_id() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(2000):
        n = int(rng.integers(1, 60))
        score = rng.integers(0, 6, n).astype(np.float32) / 5  # few distinct values: many ties
        ids = [f"a{i}" for i in rng.permutation(10 * n)[:n]]
        k = int(rng.integers(1, n + 1))
        expected = sorted(range(n), key=lambda i: (-score[i], ids[i]))[:k]
        assert top_order(score, ids, k).tolist() == expected
        checked += 1
    assert checked == 2000


def test_distinct_scores_need_no_tie_break() -> None:
    score = np.array([0.1, 0.9, 0.5], dtype=np.float32)
    assert top_order(score, ["c", "b", "a"], 3).tolist() == [1, 2, 0]
