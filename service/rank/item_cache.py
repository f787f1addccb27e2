"""The encoded item fields of recently ranked apps, so that a known candidate costs no encoding.

An app store ranks candidates drawn from one catalogue: the same app, with the same item features,
comes back request after request. Encoding a candidate's item fields costs a hash and a dict lookup
per field, and every string in a fresh request body is a new object whose hash must be computed:
a large share of the service's own time at a thousand candidates.

``ItemCache`` keeps, per app_id, the features dict it last encoded and that encoding (one row of a
``[capacity, ...]`` array per model input). A candidate is a hit only when its features dict equals
the cached one (``dict ==``, compared in C: same keys, equal values), so a hit is served exactly the
encoding a miss would get; misses are encoded by the caller and stored. Dict equality treats ``1``,
``1.0`` and ``True`` as equal, so the caller names the misses that must not be stored: those whose
token fields (categorical, hashed, multi-valued) hold anything but strings or null, whose equality is
exact; numeric fields read equal numbers as the same float (booleans as 0 and 1).

For a bundle with request-shaped graphs the encoding comes with the app's *item part* (the item
graph's output: its share of the first hidden layer and of the FM sums), kept as one more column, so a
hit costs no item graph run either.

It is bounded: when ``capacity`` apps are cached, the next new app empties it and filling starts
over (one request's misses then pay the encoding again). One cache belongs to one bundle's request
encoder, so a reload starts a new one; it is used from the event loop's thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress, repeat
from operator import eq, not_
from typing import Any

import numpy as np
import numpy.typing as npt

Arrays = dict[str, npt.NDArray[Any]]
_FIRST_ROWS = 1_024


class ItemCache:
    """Item-field encodings by app_id, valid while the app's features dict stays the same."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._features: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, int] = {}
        self._columns: Arrays = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def encode(
        self,
        app_ids: Sequence[str],
        features: Sequence[dict[str, Any]],
        encode_rows: Callable[[list[int]], tuple[Arrays, set[int]]],
    ) -> Arrays:
        """The item inputs of every candidate: cached rows for hits, ``encode_rows(misses)`` for the rest.

        ``encode_rows`` gets the positions of the candidates to encode and returns their inputs in
        that order, with the indexes (into that order) of those that must not be cached; it raises
        for bad values, naming the candidate by its position.
        """
        n = len(app_ids)
        hit = list(map(eq, map(self._features.get, app_ids), features))  # in C: no Python call per app
        if all(hit):
            self.hits += n
            return self._gather(app_ids)
        missed = list(compress(range(n), map(not_, hit)))
        fresh, uncacheable = encode_rows(missed)
        self.hits += n - len(missed)
        self.misses += len(missed)
        if len(missed) == n:
            out = fresh
        else:
            out = self._gather(app_ids)  # misses get row 0, then their fresh encoding
            for name, values in fresh.items():
                out[name][missed] = values
        if uncacheable:
            keep = [k for k in range(len(missed)) if k not in uncacheable]
            missed = [missed[k] for k in keep]
            fresh = {name: column[keep] for name, column in fresh.items()}  # ``out`` keeps every row
        if len(missed) == n:
            self._store(list(app_ids), list(features), fresh)
        elif missed:
            self._store([app_ids[i] for i in missed], [features[i] for i in missed], fresh)
        return out

    def _gather(self, app_ids: Sequence[str]) -> Arrays:
        rows = np.fromiter(map(self._rows.get, app_ids, repeat(0)), np.int64, len(app_ids))
        return {name: column[rows] for name, column in self._columns.items()}

    def _store(self, app_ids: list[str], features: list[dict[str, Any]], encoded: Arrays) -> None:
        """Cache the encodings of some candidates, column by column (no Python loop per candidate).

        The dicts are kept as they are, not copied: nothing changes a request's feature dicts.
        """
        # dict.fromkeys: an app named twice in one call takes one row (the last encoding wins)
        new = list(dict.fromkeys(app_id for app_id in app_ids if app_id not in self._rows))
        if self._size + len(new) > self.capacity:
            self.clear()
            app_ids, features = app_ids[: self.capacity], features[: self.capacity]
            encoded = {name: column[: self.capacity] for name, column in encoded.items()}
            new = list(dict.fromkeys(app_ids))
        self._grow(encoded, self._size + len(new))
        self._rows.update(zip(new, range(self._size, self._size + len(new)), strict=True))
        self._size += len(new)
        self._features.update(zip(app_ids, features, strict=True))
        rows = np.fromiter(map(self._rows.__getitem__, app_ids), np.int64, len(app_ids))
        for name, column in encoded.items():
            self._columns[name][rows] = column

    def _grow(self, like: Arrays, rows: int) -> None:
        current = next(iter(self._columns.values())).shape[0] if self._columns else 0
        if rows <= current:
            return
        size = min(self.capacity, max(_FIRST_ROWS, 2 * current, rows))
        for name, column in like.items():
            grown = np.zeros((size, *column.shape[1:]), dtype=column.dtype)
            if name in self._columns:
                grown[:current] = self._columns[name]
            self._columns[name] = grown

    def clear(self) -> None:
        """Forget every app (the arrays are kept for the next fill)."""
        self._features.clear()
        self._rows.clear()
        self._size = 0
