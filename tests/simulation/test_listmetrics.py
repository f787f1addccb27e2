"""Recommendation-list metrics against hand-computed values and a brute-force pairwise oracle."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from simulation.listmetrics import (
    ALL_USERS,
    ServedLists,
    coverage,
    download_shares,
    list_metrics,
    personalization,
    popularity,
    tercile_bounds,
    type_labels,
    user_types,
)

# Users 0 (two page views), 1 and 2; a catalog of 10 apps.
LISTS = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 4], [5, 6, 7]], dtype=np.int64)
USERS = np.array([0, 0, 1, 2], dtype=np.int64)


def brute_personalization(lists: np.ndarray, users: np.ndarray, k: int) -> float:
    overlaps = [
        len(set(lists[i, :k]) & set(lists[j, :k])) / k
        for i, j in combinations(range(len(lists)), 2)
        if users[i] != users[j]
    ]
    return 1.0 - float(np.mean(overlaps))


def test_personalization_by_hand_leaves_out_pairs_of_the_same_user() -> None:
    # Top 2: cross-user pairs (v0,v2) and (v1,v2) share app 0, the other three share nothing:
    # mean overlap (1 + 1) / (2 x 5 pairs) = 0.2. The same-user pair (v0,v1) would add 2 overlaps.
    assert personalization(LISTS, USERS, 2) == pytest.approx(0.8)
    # Top 3: (v0,v2) share {0, 2}, (v1,v2) share {0}: 3 / (3 x 5) = 0.2.
    assert personalization(LISTS, USERS, 3) == pytest.approx(0.8)
    assert personalization(LISTS[:2], USERS[:2], 2) is None  # one user: no pair to compare


def test_personalization_matches_the_pairwise_oracle_on_random_lists() -> None:
    rng = np.random.default_rng(3)
    lists = np.stack([rng.permutation(30)[:8] for _ in range(60)]).astype(np.int64)
    users = rng.integers(0, 15, 60).astype(np.int64)
    for k in (1, 4, 8):
        assert personalization(lists, users, k) == pytest.approx(brute_personalization(lists, users, k))


def test_identical_lists_have_no_personalization_and_disjoint_ones_full() -> None:
    same = np.tile(np.arange(5, dtype=np.int64), (4, 1))
    assert personalization(same, np.arange(4, dtype=np.int64), 5) == pytest.approx(0.0)
    disjoint = np.arange(20, dtype=np.int64).reshape(4, 5)
    assert personalization(disjoint, np.arange(4, dtype=np.int64), 5) == pytest.approx(1.0)


def test_coverage_and_popularity_by_hand() -> None:
    assert coverage(LISTS, 2, 10) == pytest.approx(0.5)  # apps {0, 1, 2, 5, 6}
    assert coverage(LISTS, 3, 10) == pytest.approx(0.8)  # apps 0..7
    shares = download_shares(np.array([0, 0, 0, 1, 5], dtype=np.int64), 10)
    assert shares[[0, 1, 5]].tolist() == pytest.approx([0.6, 0.2, 0.2])
    # Top 2: [.6, .2] [.6, .2] [.6, 0] [.2, 0] -> 2.4 / 8
    assert popularity(LISTS, 2, shares) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least 4 apps"):
        coverage(LISTS, 4, 10)


def test_user_types_from_download_terciles() -> None:
    downloads = np.arange(9, dtype=np.int64)
    bounds = tercile_bounds(downloads)
    assert bounds == [2, 5]
    assert type_labels(bounds) == ["0-2 downloads", "3-5 downloads", "6+ downloads"]
    labels = user_types(np.array([0, 2, 3, 5, 6, 40], dtype=np.int64), bounds)
    assert labels.tolist() == ["0-2 downloads"] * 2 + ["3-5 downloads"] * 2 + ["6+ downloads"] * 2
    assert tercile_bounds(np.zeros(6, dtype=np.int64)) == [0]  # ties collapse into fewer types


def test_list_metrics_per_arm_and_user_type() -> None:
    served = ServedLists(
        lists=LISTS,
        users=USERS,
        arms=np.array(["b", "b", "a", "a"]),
        user_downloads=np.array([0, 3, 7], dtype=np.int64),
        app_popularity=download_shares(np.array([0, 0, 0, 1, 5], dtype=np.int64), 10),
    )
    rows = list_metrics(served, sizes=(2, 3, 20), arm_order=("b",))
    assert [row.arm for row in rows][0] == "b"  # the given order first
    assert {row.k for row in rows} == {2, 3}  # 20 is longer than the lists
    whole = {(row.arm, row.k): row for row in rows if row.user_type == ALL_USERS}
    assert whole[("a", 2)].personalization == pytest.approx(personalization(LISTS[2:], USERS[2:], 2))
    assert whole[("b", 2)].personalization is None  # only user 0 in arm b
    assert whole[("b", 3)].coverage == pytest.approx(0.4)  # apps 0..3
    assert whole[("a", 2)].users == 2 and whole[("a", 2)].lists == 2
    # Users downloaded 0, 3 and 7 apps: terciles 0 and 3, so one user per type.
    typed = {(row.arm, row.user_type) for row in rows if row.user_type != ALL_USERS}
    assert typed == {("b", "0-0 downloads"), ("a", "1-3 downloads"), ("a", "4+ downloads")}
