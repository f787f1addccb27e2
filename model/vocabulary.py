"""Vectorized token -> index lookup and stable hashing.

Reserved indices, everywhere in apprank: 0 = missing, 1 = out of vocabulary, 2.. = known values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

MISSING = 0
OOV = 1
FIRST_VALUE = 2

IntArray = npt.NDArray[np.int64]


class Vocabulary:
    """An ordered list of known tokens; token ``vocabulary[i]`` has index ``FIRST_VALUE + i``.

    Lookup is a binary search in a sorted copy (``np.searchsorted``), so it is a handful of C loops over
    the column, whatever its length.
    """

    def __init__(self, tokens: Sequence[str] | Sequence[int], *, numeric: bool = False) -> None:
        dtype: Any = np.int64 if numeric else np.str_
        values = np.asarray(list(tokens), dtype=dtype)
        if len(np.unique(values)) != len(values):
            raise ValueError("vocabulary tokens must be unique")
        order = np.argsort(values, kind="stable")
        self._sorted = values[order]
        self._codes = order.astype(np.int64) + FIRST_VALUE
        self.size = len(values)

    @property
    def cardinality(self) -> int:
        """Rows an embedding of this field needs: missing, OOV and every known token."""
        return self.size + FIRST_VALUE

    def lookup(self, tokens: npt.NDArray[Any]) -> IntArray:
        """Index of each token: its code when known, ``OOV`` otherwise (missing is the caller's job)."""
        if self.size == 0 or tokens.size == 0:
            return np.full(tokens.shape, OOV, dtype=np.int64)
        position = np.searchsorted(self._sorted, tokens)
        np.minimum(position, self.size - 1, out=position)
        found = self._sorted[position] == tokens
        return np.where(found, self._codes[position], OOV).astype(np.int64, copy=False)


def stable_hash(tokens: npt.NDArray[np.str_], seed: int) -> npt.NDArray[np.uint64]:
    """xxh64 of each token's UTF-8 bytes: identical across processes, machines and languages."""
    digest = xxhash.xxh64_intdigest
    return np.fromiter(
        (digest(token.encode(), seed) for token in tokens.tolist()), dtype=np.uint64, count=tokens.size
    )


def hash_buckets(tokens: npt.NDArray[np.str_], num_buckets: int, seed: int) -> IntArray:
    """Bucket index ``FIRST_VALUE + xxh64(token) % num_buckets`` of each token; ``""`` gives MISSING."""
    flat = tokens.reshape(-1)
    buckets = (stable_hash(flat, seed) % np.uint64(num_buckets)).astype(np.int64) + FIRST_VALUE
    buckets[flat == ""] = MISSING
    return buckets.reshape(tokens.shape)
