"""Recommendation-list metrics of served top-L lists: personalization, coverage and popularity.

The inputs are the lists a simulation saw, one row per page view: ``lists[v]`` holds the app indices
of view ``v`` best first (distinct within a row), ``users[v]`` its user.

* personalization@L = 1 - the mean overlap ``|A ∩ B| / L`` of the top-L lists A, B of two page views of
  *different* users, over every such pair. It is computed exactly, without sampling: the overlaps
  summed over all pairs of lists are ``sum_app C(c_app, 2)`` (``c_app``: lists holding the app), from
  which the pairs of the same user (``sum_user sum_app C(c_user_app, 2)``) are taken out.
* coverage@L = the share of the catalog that appears in at least one top-L list.
* popularity@L = the mean popularity of the apps in top-L lists, where an app's popularity is its
  share of all downloads.

User types come from download histories: users are split by how many apps they downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
LIST_SIZES = (5, 10, 20)
ALL_USERS = "all users"


def _pairs(counts: IntArray) -> int:
    """sum of C(c, 2) over ``counts``."""
    return int((counts * (counts - 1) // 2).sum())


def _top(lists: IntArray, k: int) -> IntArray:
    if lists.ndim != 2 or lists.shape[1] < k:
        raise ValueError(f"need lists of at least {k} apps, got shape {lists.shape}")
    return lists[:, :k]


def personalization(lists: IntArray, users: IntArray, k: int) -> float | None:
    """1 - mean overlap of the top-k lists of two different users' page views; None without such pairs."""
    top = _top(lists, k)
    _, user = np.unique(users, return_inverse=True)
    views_per_user = np.bincount(user)
    cross_pairs = _pairs(np.asarray([top.shape[0]])) - _pairs(views_per_user)
    if cross_pairs == 0:
        return None
    all_overlaps = _pairs(np.unique(top, return_counts=True)[1])
    user_app = np.repeat(user, k) * (int(top.max()) + 1) + top.reshape(-1)
    same_user_overlaps = _pairs(np.unique(user_app, return_counts=True)[1])
    return 1.0 - (all_overlaps - same_user_overlaps) / (k * cross_pairs)


def coverage(lists: IntArray, k: int, catalog_size: int) -> float:
    """Share of the ``catalog_size`` apps that appear in some top-k list."""
    if catalog_size < 1:
        raise ValueError("catalog_size must be positive")
    return float(np.unique(_top(lists, k)).size / catalog_size)


def popularity(lists: IntArray, k: int, app_popularity: FloatArray) -> float | None:
    """Mean ``app_popularity`` over the apps of every top-k list; None without lists."""
    top = _top(lists, k)
    return float(app_popularity[top].mean()) if top.size else None


def download_shares(downloaded_apps: IntArray, catalog_size: int) -> FloatArray:
    """Each app's share of the downloads (all zero without downloads)."""
    counts = np.bincount(downloaded_apps, minlength=catalog_size).astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def tercile_bounds(downloads: IntArray) -> list[int]:
    """Upper bounds (inclusive) of light and medium users: the terciles of downloads per user."""
    if downloads.size == 0:
        return []
    bounds = np.quantile(downloads, [1 / 3, 2 / 3], method="lower").astype(int).tolist()
    return sorted(set(bounds))


def type_labels(bounds: Sequence[int]) -> list[str]:
    """The user-type labels of ``bounds`` (inclusive upper bounds), lightest first.

    With bounds [2, 6]: ``0-2 downloads``, ``3-6 downloads``, ``7+ downloads``.
    """
    edges = sorted(bounds)
    lows = [0, *(b + 1 for b in edges)]
    labels = [f"{low}-{high} downloads" for low, high in zip(lows, edges, strict=False)]
    return [*labels, f"{lows[-1]}+ downloads"]


def user_types(downloads: IntArray, bounds: Sequence[int]) -> npt.NDArray[np.str_]:
    """A label per user (see ``type_labels``): the download-count range it falls in."""
    index = np.searchsorted(np.asarray(sorted(bounds), dtype=np.int64), downloads, side="left")
    return np.asarray(type_labels(bounds))[index]


@dataclass(frozen=True)
class ListMetricsRow:
    """The metrics of one (arm, user type, L)."""

    arm: str
    user_type: str
    k: int
    users: int
    lists: int
    personalization: float | None
    coverage: float
    popularity: float | None


@dataclass(frozen=True)
class ServedLists:
    """What the metrics need of a simulation: the lists, their users and arms, and the downloads.

    Attributes:
        lists: ``[V, K]`` app indices per page view, best first.
        users: ``[V]`` user index per page view.
        arms: ``[V]`` arm per page view.
        user_downloads: ``[U]`` downloads of each user (indexed like ``users``).
        app_popularity: ``[A]`` share of downloads per app (``A`` is the catalog size).
    """

    lists: IntArray
    users: IntArray
    arms: npt.NDArray[np.str_]
    user_downloads: IntArray
    app_popularity: FloatArray


def list_metrics(
    served: ServedLists, sizes: Sequence[int] = LIST_SIZES, arm_order: Sequence[str] = ()
) -> list[ListMetricsRow]:
    """Every metric per arm, per user type (plus all users) and per list size that the lists allow.

    Args:
        arm_order: arms listed first, in this order (e.g. the control first); the others follow sorted.
    """
    bounds = tercile_bounds(served.user_downloads[np.unique(served.users)])
    view_type = user_types(served.user_downloads[served.users], bounds)
    groups = [ALL_USERS, *type_labels(bounds)]
    rows: list[ListMetricsRow] = []
    seen = set(served.arms.tolist())
    for arm in [a for a in arm_order if a in seen] + sorted(seen - set(arm_order)):
        for group in groups:
            mask = (served.arms == arm) & ((view_type == group) | (group == ALL_USERS))
            if not mask.any():
                continue
            rows.extend(_group_rows(served, arm, group, mask, sizes))
    return rows


def _group_rows(
    served: ServedLists, arm: str, group: str, mask: npt.NDArray[np.bool_], sizes: Sequence[int]
) -> list[ListMetricsRow]:
    lists, users = served.lists[mask], served.users[mask]
    catalog = served.app_popularity.size
    return [
        ListMetricsRow(
            arm=arm,
            user_type=group,
            k=k,
            users=int(np.unique(users).size),
            lists=int(lists.shape[0]),
            personalization=personalization(lists, users, k),
            coverage=coverage(lists, k, catalog),
            popularity=popularity(lists, k, served.app_popularity),
        )
        for k in sizes
        if k <= lists.shape[1]
    ]
