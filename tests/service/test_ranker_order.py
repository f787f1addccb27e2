"""``top_order`` against a sort oracle (best score first, equal scores by app_id, any k); request ids."""

from __future__ import annotations

import time

import numpy as np

from service.rank.rank_service import new_request_id
from service.rank.ranker import top_order


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


def test_request_ids_are_unique_and_ordered_by_time() -> None:
    # time-ordered ids keep the event log's request_id indexes appending at their end
    first = [new_request_id() for _ in range(2_000)]
    time.sleep(0.002)
    later = new_request_id()
    assert len(set(first)) == len(first)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in first)
    assert max(first) < later
    assert abs(int(later[:12], 16) - time.time() * 1000) < 60_000
