"""A byte ring in a memory-mapped file: one process appends records, another consumes them.

The served-list hand-off of ``service.events.process_writer``. The producer (a uvicorn worker's request
threads, under one lock) copies a length-prefixed record into the ring and advances ``head``; the
consumer (the writer process) reads from ``tail`` to ``head``, stores what it read, and only then
advances ``tail``. So the ring is bounded in bytes (a record that does not fit is refused at once, never
waited for), and a consumer that dies between reading and committing loses nothing: its successor reads
the same records again (the store's inserts are idempotent).

Layout: a header page of 64-bit slots (``Slot``), then ``capacity`` bytes of data. ``head`` and ``tail``
count bytes since creation (they never wrap; positions in the data are taken modulo ``capacity``). Each
slot has a single writing process, and an aligned 64-bit load or store is single-copy atomic on the
64-bit CPUs the service runs on, so the two sides need no lock between them; the producer writes a
record's bytes before it publishes the new ``head`` (x86-64 keeps stores in order).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from enum import IntEnum
from pathlib import Path

HEADER_BYTES = 4096
MAGIC = 0x61707072616E6B31  # "apprank1"
_LENGTH = struct.Struct("<I")


class Slot(IntEnum):
    """The header's 64-bit slots, and which side writes each (P: producer, C: consumer)."""

    MAGIC = 0  # P, at creation
    CAPACITY = 1  # P, at creation
    HEAD = 2  # P: bytes appended since creation
    TAIL = 3  # C: bytes stored (consumed) since creation
    RECORDS_IN = 4  # P: records appended
    RECORDS_OUT = 5  # C: records consumed (stored or given up)
    FLUSH_REQUESTED = 6  # P: bumped to ask the consumer to write what it holds now
    CLOSING = 7  # P: 1 once the producer stops; the consumer drains the ring and exits
    FAILING = 8  # C: 1 while the last write failed on the database
    WRITTEN = 9  # C: lists stored
    DROPPED = 10  # C: lists given up (refused by the store, or past the retry horizon)
    RETRIED = 11  # C: list writes failed on the database and retried
    CUT_TOO_LONG = 12  # C: logged values cut to the caps
    CUT_UNKNOWN = 13  # C: logged keys dropped (not a field of the model's schema)
    HEARTBEAT = 14  # C: bumped every loop of the consumer
    PID = 15  # C: the consumer's process id


_SLOTS = 16
_HEAD, _TAIL, _RECORDS_IN = int(Slot.HEAD), int(Slot.TAIL), int(Slot.RECORDS_IN)
_LENGTH_SIZE = _LENGTH.size


class ByteRing:
    """The ring in the file at ``path`` (see the module's doc). Create with ``create``, attach with
    ``attach``; ``close`` unmaps (the creator also removes the file with ``unlink``)."""

    def __init__(self, path: Path, mapping: mmap.mmap) -> None:
        self.path = path
        self._map = mapping
        self._slots = (ctypes.c_uint64 * _SLOTS).from_buffer(mapping)
        if self._slots[Slot.MAGIC] != MAGIC:
            raise ValueError(f"{path} is not a served-list ring")
        self.capacity = int(self._slots[Slot.CAPACITY])

    @classmethod
    def create(cls, path: Path, capacity: int) -> ByteRing:
        """A new, empty ring of ``capacity`` data bytes in a new file at ``path``."""
        if capacity < 64:
            raise ValueError(f"capacity must be at least 64 bytes, got {capacity}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # reserve the blocks now: a full tmpfs (a container's 64 MiB /dev/shm) fails here with
            # ENOSPC, where a page written later through the mapping would kill the process (SIGBUS)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, HEADER_BYTES + capacity)
            else:  # macOS
                os.ftruncate(fd, HEADER_BYTES + capacity)
            # every page mapped now (one call), not faulted in later on the request thread
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mapping = mmap.mmap(fd, HEADER_BYTES + capacity, flags=flags)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        slots = (ctypes.c_uint64 * _SLOTS).from_buffer(mapping)
        slots[Slot.CAPACITY] = capacity
        slots[Slot.MAGIC] = MAGIC
        del slots
        return cls(path, mapping)

    @classmethod
    def attach(cls, path: Path) -> ByteRing:
        """The ring another process created at ``path``."""
        fd = os.open(path, os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        return cls(path, mapping)

    def get(self, slot: Slot) -> int:
        return int(self._slots[slot])

    def set(self, slot: Slot, value: int) -> None:
        """Set a slot (only the side that owns it, see ``Slot``)."""
        self._slots[slot] = value

    def used(self) -> int:
        """Bytes appended and not consumed yet."""
        return self.get(Slot.HEAD) - self.get(Slot.TAIL)

    def pending_records(self) -> int:
        """Records appended and not consumed yet."""
        return self.get(Slot.RECORDS_IN) - self.get(Slot.RECORDS_OUT)

    def append(self, record: bytes) -> int:
        """Append one record; its end offset (compare with ``TAIL``), or -1 when it does not fit.

        Producer side: callers serialize calls (one lock per producer process). Costs two copies into
        the mapping and three slot updates: no system call.
        """
        slots, capacity = self._slots, self.capacity
        size = len(record)
        head = slots[_HEAD]
        if head + _LENGTH_SIZE + size - slots[_TAIL] > capacity:
            return -1
        self._put(head, _LENGTH.pack(size))
        self._put(head + _LENGTH_SIZE, record)
        slots[_RECORDS_IN] += 1
        slots[_HEAD] = head + _LENGTH_SIZE + size  # published last: the consumer reads up to here
        return head + _LENGTH_SIZE + size

    def _put(self, offset: int, chunk: bytes) -> None:
        start = offset % self.capacity
        end = start + len(chunk)
        if end <= self.capacity:
            self._map[HEADER_BYTES + start : HEADER_BYTES + end] = chunk
            return
        first = self.capacity - start
        view = memoryview(chunk)
        self._map[HEADER_BYTES + start : HEADER_BYTES + self.capacity] = view[:first]
        self._map[HEADER_BYTES : HEADER_BYTES + len(chunk) - first] = view[first:]

    def _take(self, offset: int, size: int) -> bytes:
        start = offset % self.capacity
        first = min(size, self.capacity - start)
        chunk = self._map[HEADER_BYTES + start : HEADER_BYTES + start + first]
        return chunk if first == size else chunk + self._map[HEADER_BYTES : HEADER_BYTES + size - first]

    def read(self, max_records: int) -> tuple[list[bytes], list[int]]:
        """Up to ``max_records`` records from ``TAIL``, and the offset after each of them.

        Consumer side; nothing is consumed until ``consume``.
        """
        offset = self.get(Slot.TAIL)
        head = self.get(Slot.HEAD)
        records: list[bytes] = []
        ends: list[int] = []
        while offset < head and len(records) < max_records:
            (length,) = _LENGTH.unpack(self._take(offset, _LENGTH.size))
            records.append(self._take(offset + _LENGTH.size, length))
            offset += _LENGTH.size + length
            ends.append(offset)
        return records, ends

    def consume(self, end: int, records: int) -> None:
        """Consumer side: release everything before ``end`` (``records`` records) to the producer."""
        self._slots[Slot.RECORDS_OUT] += records
        self._slots[Slot.TAIL] = end

    def bump(self, slot: Slot, by: int = 1) -> None:
        """Add to a slot this side owns."""
        self._slots[slot] += by

    def close(self) -> None:
        """Unmap the ring (the file stays)."""
        del self._slots
        try:
            self._map.close()
        except BufferError:  # a view still exported elsewhere; the mapping goes with the process
            pass

    def unlink(self) -> None:
        """Remove the ring's file (the creator, once no consumer needs it)."""
        self.path.unlink(missing_ok=True)
