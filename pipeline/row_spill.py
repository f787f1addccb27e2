"""A spill of decoded chunks on disk, so that the export reads the event store once.

The export needs the window twice: once to grow the vocabularies (the new ids' indices are known only
at the end), once to encode with them. The first pass writes each chunk it reads from the store, as
decoded (canonical) columns, to a file of consecutive ``.npy`` arrays; the second reads that file back,
which is a copy per column instead of the store's join and the JSON decoding. Memory holds one chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from model.schema import FeatureSchema
from training.readers.base import Chunk

log = logging.getLogger(__name__)


class RowSource(Protocol):
    """Rows as chunks of canonical columns, and a description of where they come from."""

    def chunks(self, schema: FeatureSchema) -> Iterator[Chunk]: ...

    @property
    def description(self) -> str: ...


@dataclass
class Spilled:
    """``source``'s chunks, read from it the first time and spilled to ``path``; from ``path`` after a
    complete first pass (an interrupted one is read from the source again)."""

    source: RowSource
    path: Path
    complete: bool = field(default=False, init=False)

    @property
    def description(self) -> str:
        return self.source.description

    def chunks(self, schema: FeatureSchema) -> Generator[Chunk, None, None]:
        return self._read(schema) if self.complete else self._spill(schema)

    def _spill(self, schema: FeatureSchema) -> Generator[Chunk, None, None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("wb") as out:
            for chunk in self.source.chunks(schema):
                np.save(out, chunk.labels, allow_pickle=False)
                for name in schema.names:
                    np.save(out, chunk.columns[name], allow_pickle=False)
                yield chunk
        self.complete = True
        log.info("spilled %s: %.0f MiB", self.path, self.path.stat().st_size / 2**20)

    def _read(self, schema: FeatureSchema) -> Generator[Chunk, None, None]:
        size, first = self.path.stat().st_size, 1
        with self.path.open("rb") as spill:
            while spill.tell() < size:
                labels = np.load(spill, allow_pickle=False)
                columns = {name: np.load(spill, allow_pickle=False) for name in schema.names}
                yield Chunk(columns, labels, first)
                first += labels.shape[0]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.complete = False
