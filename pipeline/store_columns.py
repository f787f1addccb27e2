"""The event store's labeled impressions as training chunks, decoded a column at a time.

A block's rows repeat few distinct texts: the user and context JSON of a request are shared by its
items, an item's features are stored once per (app, features) version (``item_features``), and a
field's raw values repeat across rows. So each distinct JSON text of a block is decoded once, each
field's distinct raw values are canonicalized once (``model.files.canonical_column``, elementwise, as
``export_training`` writes them), and the rows take them by index: no Python object per row and field.
The chunks are what ``pipeline.export.block_chunk`` makes of the same rows (a test compares them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from model.files import canonical_column
from model.schema import FeatureKind, FeatureSchema, FeatureSpec, Source
from service.events.rows import TrainingPage
from training.readers.base import Chunk

Codes = npt.NDArray[np.int64]


def intern(values: Sequence[Any]) -> tuple[Codes, list[Any]]:
    """Each value's index into the list of distinct values (first-seen order), and that list."""
    distinct = list(dict.fromkeys(values))
    index = {value: code for code, value in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, distinct


def canonical_array(spec: FeatureSpec, values: Sequence[Any]) -> npt.NDArray[Any]:
    """A field's raw values in the chunk form the training readers give: float64 (NaN missing) for
    numeric fields, unicode text (``""`` missing) for the others."""
    canonical = canonical_column(spec, values)
    if spec.kind is FeatureKind.NUMERIC:
        return np.array([np.nan if v is None else v for v in canonical], dtype=np.float64)
    return np.array(canonical, dtype=str) if canonical else np.empty(0, dtype=str)


class _Decoded:
    """One source's (user, context or item) JSON texts of a block, each distinct one decoded once."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.codes, distinct = intern(texts)
        self.objects: list[dict[str, Any]] = [orjson.loads(text) for text in distinct]

    def column(self, spec: FeatureSpec) -> npt.NDArray[Any]:
        values = [obj.get(spec.name) for obj in self.objects]
        return canonical_array(spec, values)[self.codes]

    def filled_column(self, spec: FeatureSpec, ids: Sequence[str]) -> npt.NDArray[Any]:
        """The field with the row's id where the logged object lacks it (as the service fills it)."""
        distinct = [obj.get(spec.name) for obj in self.objects]
        raw = map(distinct.__getitem__, self.codes.tolist())
        # ids are mostly distinct (one user per request): canonicalized per row, not interned
        return canonical_array(spec, [i if v is None else v for v, i in zip(raw, ids, strict=True)])


def block_columns(page: TrainingPage, schema: FeatureSchema, first_line: int = 1) -> Chunk:
    """A block of training rows as a ``Chunk`` of canonical columns, its first row numbered ``first_line``."""
    texts = {Source.USER: page.user_json, Source.CONTEXT: page.context_json, Source.ITEM: page.features_json}
    decoded = {source: _Decoded(texts[source]) for source in {spec.source for spec in schema.fields}}
    columns: dict[str, npt.NDArray[Any]] = {}
    for spec in schema.fields:
        filled_from = schema.filled_from(spec.name)
        if filled_from is None:
            columns[spec.name] = decoded[spec.source].column(spec)
        else:
            ids = page.user_ids if filled_from == "user_id" else page.app_ids
            columns[spec.name] = decoded[spec.source].filled_column(spec, ids)
    return Chunk(columns, np.asarray(page.labels, dtype=np.float32).reshape(-1), first_line)


def blocks_of(pages: Iterable[TrainingPage], size: int) -> Iterator[TrainingPage]:
    """The rows of ``pages`` regrouped in consecutive blocks of ``size`` rows (the last one shorter)."""
    pending: list[TrainingPage] = []
    held = 0
    for page in pages:
        pending.append(page)
        held += len(page)
        while held >= size:
            merged = _merged(pending)
            yield _sliced(merged, 0, size)
            rest = _sliced(merged, size, held)
            pending, held = ([rest] if len(rest) else []), held - size
    if held:
        yield _merged(pending)


_FIELDS = tuple(field.name for field in dataclasses.fields(TrainingPage))


def _merged(pages: Sequence[TrainingPage]) -> TrainingPage:
    if len(pages) == 1:
        return pages[0]
    joined = (list(chain.from_iterable(getattr(page, name) for page in pages)) for name in _FIELDS)
    return TrainingPage(*joined)


def _sliced(page: TrainingPage, start: int, stop: int) -> TrainingPage:
    return TrainingPage(*(getattr(page, name)[start:stop] for name in _FIELDS))


def store_chunks(pages: Iterable[TrainingPage], schema: FeatureSchema, block_rows: int) -> Iterator[Chunk]:
    """The rows of ``pages`` as chunks of ``block_rows`` rows, numbered from line 1."""
    first = 1
    for block in blocks_of(pages, block_rows):
        chunk = block_columns(block, schema, first)
        yield chunk
        first += chunk.num_rows
