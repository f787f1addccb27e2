"""Fitting a FeatureEncoder, in one pass over data that may arrive in chunks.

``EncoderFitter.update`` folds one chunk of raw columns into running statistics (token counts, sums,
a bounded reservoir sample for quantiles); ``finish`` turns them into a ``FeatureEncoder``. Vocabularies
are ordered by descending count, then by token, so the same data always gives the same indices.

With ``vocab_cap`` the memory of fitting is bounded by the number of distinct values: a categorical
field whose distinct values pass the cap stops being counted and is hashed into ``vocab_cap`` buckets
instead (``hashed_fallback`` names those fields).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from model.columns import as_category_strings, as_float, split_multi
from model.encoder import (
    CategoricalState,
    Columns,
    ContinuousState,
    FeatureEncoder,
    FieldState,
    HashedState,
    LogBucketState,
    MultiState,
    QuantileState,
    log_bucket_tokens,
)
from model.schema import FeatureKind, FeatureSchema, FeatureSpec, NumericTransform

HASH_SEED = 0x61707072  # "appr": fixed, so hashed indices never change between fits
RESERVOIR = 200_000


class _Moments:
    """Running count, sum and sum of squares (in float64) for standardizing."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.squares = 0.0

    def add(self, values: npt.NDArray[np.float64]) -> None:
        finite = values[np.isfinite(values)]
        self.count += finite.size
        self.total += float(finite.sum())
        self.squares += float(np.square(finite).sum())

    def mean_std(self) -> tuple[float, float]:
        if self.count == 0:
            return 0.0, 1.0
        mean = self.total / self.count
        variance = max(self.squares / self.count - mean * mean, 0.0)
        std = float(np.sqrt(variance))
        return mean, std if std > 1e-12 else 1.0


class EncoderFitter:
    """Accumulates statistics chunk by chunk; deterministic for a given sequence of chunks."""

    def __init__(self, schema: FeatureSchema, seed: int = 0, vocab_cap: int | None = None) -> None:
        self.schema = schema
        self.vocab_cap = vocab_cap
        self.hashed_fallback: set[str] = set()
        self._counts: dict[str, Counter[Any]] = {}
        self._moments: dict[str, _Moments] = {}
        self._samples: dict[str, tuple[npt.NDArray[np.float64], int]] = {}
        self._rng = np.random.default_rng(seed)

    def update(self, columns: Columns) -> None:
        """Fold one chunk in; fields absent from ``columns`` count as missing."""
        for spec in self.schema.fields:
            raw = columns.get(spec.name)
            if raw is None:
                continue
            try:
                self._update_field(spec, np.asarray(raw))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{spec.name}: {error}") from None

    def _update_field(self, spec: FeatureSpec, array: npt.NDArray[Any]) -> None:
        if spec.kind is FeatureKind.HASHED or spec.name in self.hashed_fallback:
            return
        if spec.kind is FeatureKind.CATEGORICAL:
            self._count(spec.name, as_category_strings(array))
            if self.vocab_cap is not None and len(self._counts[spec.name]) > self.vocab_cap:
                self.hashed_fallback.add(spec.name)
                del self._counts[spec.name]  # the counts are what the cap bounds
            return
        if spec.kind is FeatureKind.MULTI:
            self._count(spec.name, split_multi(array, spec.separator)[0])
            return
        values = as_float(array)
        if spec.transform is NumericTransform.LOG_BUCKET:
            self._count(spec.name, log_bucket_tokens(values[~np.isnan(values)]))
        elif spec.transform is NumericTransform.QUANTILE_BUCKET:
            self._sample(spec.name, values[np.isfinite(values)])
        else:
            if spec.transform is NumericTransform.LOG:
                values = np.sign(values) * np.log1p(np.abs(values))
            self._moments.setdefault(spec.name, _Moments()).add(values)

    def _count(self, name: str, tokens: npt.NDArray[Any]) -> None:
        tokens = tokens[tokens != ""] if tokens.dtype.kind == "U" else tokens
        values, counts = np.unique(tokens, return_counts=True)
        self._counts.setdefault(name, Counter()).update(
            dict(zip(values.tolist(), counts.tolist(), strict=True))
        )

    def _sample(self, name: str, values: npt.NDArray[np.float64]) -> None:
        """Reservoir sampling (algorithm R, vectorized): a uniform sample of every value seen so far."""
        reservoir, seen = self._samples.get(name, (np.empty(0), 0))
        room = RESERVOIR - reservoir.size
        if room > 0:
            reservoir = np.concatenate([reservoir, values[:room]])
            seen += min(room, values.size)
            values = values[room:]
        if values.size:
            # value k of this chunk is the (seen + k + 1)-th seen: it replaces slot j when j < RESERVOIR.
            slots = self._rng.integers(0, seen + np.arange(1, values.size + 1))
            chosen = slots < RESERVOIR
            reservoir[slots[chosen]] = values[chosen]  # in order: the last writer of a slot wins
            seen += values.size
        self._samples[name] = (reservoir, seen)

    def finish(self) -> FeatureEncoder:
        """The fitted encoder."""
        states: dict[str, FieldState] = {spec.name: self._state(spec) for spec in self.schema.fields}
        return FeatureEncoder(self.schema, states)

    def _state(self, spec: FeatureSpec) -> FieldState:
        if spec.kind is FeatureKind.HASHED:
            assert spec.num_buckets is not None
            return HashedState(num_buckets=spec.num_buckets, seed=HASH_SEED)
        if spec.name in self.hashed_fallback:
            assert self.vocab_cap is not None
            return HashedState(num_buckets=self.vocab_cap, seed=HASH_SEED)
        if spec.kind is FeatureKind.CATEGORICAL:
            return CategoricalState(vocabulary=[str(t) for t in self._vocabulary(spec)])
        if spec.kind is FeatureKind.MULTI:
            vocabulary = [str(t) for t in self._vocabulary(spec)]
            return MultiState(vocabulary=vocabulary, separator=spec.separator, max_len=spec.max_len)
        if spec.transform is NumericTransform.LOG_BUCKET:
            return LogBucketState(vocabulary=[int(t) for t in self._vocabulary(spec)])
        if spec.transform is NumericTransform.QUANTILE_BUCKET:
            return QuantileState(boundaries=self._boundaries(spec))
        assert spec.transform is not None
        mean, std = self._moments.get(spec.name, _Moments()).mean_std()
        return ContinuousState(transform=spec.transform, mean=mean, std=std, clip=spec.clip)

    def _vocabulary(self, spec: FeatureSpec) -> list[Any]:
        counts = self._counts.get(spec.name, Counter())
        kept = [(token, n) for token, n in counts.items() if n >= spec.min_count]
        kept.sort(key=lambda item: (-item[1], item[0]))
        if spec.max_vocab is not None:
            kept = kept[: spec.max_vocab]
        return [token for token, _ in kept]

    def _boundaries(self, spec: FeatureSpec) -> list[float]:
        sample = self._samples.get(spec.name, (np.empty(0), 0))[0]
        if sample.size == 0:
            return []
        assert spec.num_buckets is not None
        quantiles = np.linspace(0.0, 1.0, spec.num_buckets + 1)[1:-1]
        return [float(b) for b in np.unique(np.quantile(sample, quantiles))]


def fit_encoder(schema: FeatureSchema, columns: Columns) -> FeatureEncoder:
    """Fit on in-memory columns in one call."""
    fitter = EncoderFitter(schema)
    fitter.update(columns)
    return fitter.finish()
