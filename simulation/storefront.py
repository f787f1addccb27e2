"""The simulated store's client side: the synthetic world, candidate sets and ``POST /rank`` bodies.

``Storefront`` caches every app's and user's JSON-ready features once, so building a request is a few
list look-ups instead of numpy work per candidate; the bodies equal ``AppStoreWorld.request_dict``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from simulation.synth import AppStoreWorld

IntArray = npt.NDArray[np.int64]
CONTEXT_FIELDS = ("hour", "weekday", "network")


def load_world(path: Path) -> AppStoreWorld:
    """The synthetic world of a dataset: ``path`` is its ``synth.json`` or the folder holding it."""
    from simulation.synth import AppStoreWorld, SynthConfig

    file = path / "synth.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no synth.json (write one with `apprank synth` or `apprank run`)")
    return AppStoreWorld(SynthConfig(**json.loads(file.read_text())))


def _scalar(value: Any) -> Any:
    """A numpy scalar as a JSON value (NaN -> None)."""
    item = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(item, float) and np.isnan(item) else item


class Storefront:
    """Candidate sets and /rank bodies over one ``AppStoreWorld``."""

    def __init__(self, world: AppStoreWorld) -> None:
        self.world = world
        self.num_apps = int(world.app_ids.size)
        self.num_users = int(world.user_ids.size)
        apps = world.app_features(np.arange(self.num_apps))
        names = [name for name in apps if name != "app_id"]
        self._candidates = [
            {"app_id": str(app_id), "features": {name: _scalar(apps[name][i]) for name in names}}
            for i, app_id in enumerate(apps["app_id"].tolist())
        ]
        self._app_index = {str(app_id): i for i, app_id in enumerate(world.app_ids.tolist())}
        self._users: dict[int, dict[str, Any]] = {}

    def app_index(self, app_ids: list[str]) -> IntArray:
        """Indices of app ids (as the service returns them)."""
        return np.asarray([self._app_index[app_id] for app_id in app_ids], dtype=np.int64)

    def user_id(self, user: int) -> str:
        """The id of user index ``user``."""
        return str(self.world.user_ids[user])

    def candidates(self, n: int, rng: np.random.Generator, exclude: set[int]) -> IntArray:
        """``n`` distinct apps the store would rank (popular ones more often), none of ``exclude``."""
        wanted = min(n, self.num_apps - len(exclude))
        drawn = self.world.candidates(min(self.num_apps, wanted + len(exclude)), rng)
        kept = drawn[~np.isin(drawn, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))]
        return kept[:wanted]

    def body(self, user: int, context: dict[str, str], apps: IntArray, **extra: Any) -> dict[str, Any]:
        """The ``POST /rank`` body for ``user`` in ``context`` over ``apps``, plus ``extra`` fields."""
        return {
            "user_id": self.user_id(user),
            "user": self._user_features(user),
            "context": {name: context[name] for name in CONTEXT_FIELDS},
            "candidates": [self._candidates[int(a)] for a in apps],
            **extra,
        }

    def _user_features(self, user: int) -> dict[str, Any]:
        cached = self._users.get(user)
        if cached is None:
            columns = self.world.user_features([user])
            cached = {name: _scalar(values[0]) for name, values in columns.items() if name != "user_id"}
            self._users[user] = cached
        return cached
