"""Encoded training data in memory, batching, and asynchronous batch preparation.

Raw chunks from a reader are encoded chunk by chunk (so raw text never has to fit in memory at once)
into compact per-role arrays; batches are gathered from them by a shuffled index. With
``async_loading`` a background thread prepares the next batches while the model trains on the current
one (torch releases the GIL in its kernels, so the two overlap on separate cores).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

from model.encoder import Encoded, FeatureEncoder, InputLayout, InputRole
from model.nets.blocks import ModelBatch
from training.readers.base import Chunk

T = TypeVar("T")


@dataclass(frozen=True)
class EncodedData:
    """A split, encoded: ``idx`` [N, Fi] int64, ``val`` [N, Fv] float32, one [N, L] per bag, labels [N]."""

    idx: Tensor
    val: Tensor
    bags: tuple[Tensor, ...]
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: Tensor) -> tuple[ModelBatch, Tensor]:
        """The batch of the given row numbers, and its labels."""
        return ModelBatch(self.idx[rows], self.val[rows], tuple(b[rows] for b in self.bags)), self.labels[
            rows
        ]

    def head(self, rows: int) -> EncodedData:
        return EncodedData(
            self.idx[:rows], self.val[:rows], tuple(b[:rows] for b in self.bags), self.labels[:rows]
        )

    def encoded(self, layout: InputLayout) -> Encoded:
        """Back to per-field numpy arrays (what the ONNX graph takes)."""
        out: Encoded = {}
        for i, spec in enumerate(layout.of_role(InputRole.INDEX)):
            out[spec.name] = self.idx[:, i].numpy()
        for i, spec in enumerate(layout.of_role(InputRole.VALUE)):
            out[spec.name] = self.val[:, i].numpy()
        for bag, spec in zip(self.bags, layout.of_role(InputRole.BAG), strict=True):
            out[spec.name] = bag.numpy()
        return out


def limit_rows(chunks: Iterable[Chunk], max_rows: int | None) -> Iterator[Chunk]:
    """The chunks, cut after ``max_rows`` rows in all (None: every row)."""
    remaining = max_rows
    for chunk in chunks:
        if remaining is None:
            yield chunk
            continue
        if remaining <= 0:
            return
        if chunk.num_rows > remaining:
            columns = {name: values[:remaining] for name, values in chunk.columns.items()}
            chunk = Chunk(columns, chunk.labels[:remaining], chunk.first_line)
        remaining -= chunk.num_rows
        yield chunk


def _stack(
    encoded: Encoded, layout: InputLayout, rows: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    return layout.stacked(encoded, rows)


def encode_chunks(encoder: FeatureEncoder, chunks: Iterable[Chunk]) -> EncodedData:
    """Encode every chunk and concatenate the compact results."""
    layout = encoder.layout
    idx_parts, val_parts, label_parts = [], [], []
    bag_parts: list[list[np.ndarray]] = [[] for _ in layout.of_role(InputRole.BAG)]
    for chunk in chunks:
        rows = len(chunk.labels)
        idx, val, bags = _stack(encoder.transform(chunk.columns, rows), layout, rows)
        idx_parts.append(idx)
        val_parts.append(val)
        label_parts.append(np.asarray(chunk.labels, dtype=np.float32))
        for parts, bag in zip(bag_parts, bags, strict=True):
            parts.append(bag)
    if not label_parts:
        raise ValueError("no rows to encode")
    return EncodedData(
        idx=torch.from_numpy(np.concatenate(idx_parts)),
        val=torch.from_numpy(np.concatenate(val_parts)),
        bags=tuple(torch.from_numpy(np.concatenate(parts)) for parts in bag_parts),
        labels=torch.from_numpy(np.concatenate(label_parts)),
    )


def split_rows(data: EncodedData, order: np.ndarray, n_valid: int, n_test: int) -> tuple[EncodedData, ...]:
    """Cut by a row permutation: its first ``n_valid`` rows are valid, the next ``n_test`` test."""
    rows = torch.from_numpy(order)
    cuts = (rows[n_valid + n_test :], rows[:n_valid], rows[n_valid : n_valid + n_test])
    return tuple(_subset(data, part) for part in cuts)


def _subset(data: EncodedData, rows: Tensor) -> EncodedData:
    batch, labels = data.take(rows)
    return EncodedData(batch.idx, batch.val, batch.bags, labels)


def batches(
    data: EncodedData, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[tuple[ModelBatch, Tensor]]:
    """Batches of ``batch_size`` rows (the last one may be smaller), shuffled when asked."""
    n = len(data)
    if shuffle:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield data.take(order[start : start + batch_size])
        return
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = ModelBatch(
            data.idx[start:stop], data.val[start:stop], tuple(b[start:stop] for b in data.bags)
        )
        yield batch, data.labels[start:stop]


_DONE = object()


class Prefetcher(Generic[T]):
    """Runs an iterator in a background thread, ``depth`` items ahead; re-raises its errors."""

    def __init__(self, source: Iterable[T], depth: int = 4) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if self._stop.is_set():
                    return
                self._queue.put(item)
            self._queue.put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._queue.put(error)

    def __iter__(self) -> Generator[T, None, None]:
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()
            # unblock a producer waiting on a full queue and wait for it to stop: a reader thread left
            # running inside pyarrow or torch when the interpreter exits can abort the process
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.01)
                except queue.Empty:
                    pass


def maybe_prefetch(source: Iterable[T], enabled: bool, depth: int = 4) -> Iterable[T]:
    """``Prefetcher(source)`` when enabled, else ``source`` itself (the synchronous baseline)."""
    return Prefetcher(source, depth) if enabled else source
