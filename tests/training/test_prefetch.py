"""The background reader of asynchronous loading: order, errors, and no thread left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from training.data import Prefetcher


def _counting(n: int, read: list[int]) -> Iterator[int]:
    for i in range(n):
        read.append(i)
        yield i


def test_items_come_in_order_and_the_thread_ends() -> None:
    prefetch = Prefetcher(_counting(50, []), depth=3)
    assert list(prefetch) == list(range(50))
    assert not prefetch._thread.is_alive()


def test_a_consumer_that_stops_early_stops_the_reader_before_going_on() -> None:
    read: list[int] = []
    prefetch = Prefetcher(_counting(10_000, read), depth=2)
    items = iter(prefetch)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()  # what a ``break`` out of a for loop does
    assert not prefetch._thread.is_alive()  # joined, not left reading while the caller goes on
    assert len(read) < 10  # it stopped within its queue depth, it did not read everything


def test_the_readers_error_reaches_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("row 7: bad value")

    with pytest.raises(ValueError, match="row 7"):
        list(Prefetcher(failing()))
