"""A small HTTP/1.1 load generator for the serving bench where ``wrk`` is not installed.

Each connection is one process with one keep-alive socket that sends the same prepared request again
and again and reads each answer whole (headers, then Content-Length bytes) before the next one, like
wrk. Its own cost per request (Python, tens of microseconds) is in its latencies: compare its figures
with each other, not with wrk's.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from urllib.parse import urlsplit

import numpy as np


def _request(host: str, path: str, body: bytes, media: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media}\r\nAccept: {media}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _answer(conn: socket.socket, buffer: bytearray) -> int:
    """Read one answer from ``conn`` (what follows it stays in ``buffer``); its status."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        buffer += conn.recv(65536)
    head = bytes(buffer[:end]).decode("latin-1").lower()
    length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
    while len(buffer) < end + 4 + length:
        buffer += conn.recv(65536)
    del buffer[: end + 4 + length]
    return int(head.split(" ", 2)[1])


Outcome = tuple[list[float], int]


def _connection(url: str, request: bytes, seconds: float, queue: multiprocessing.Queue[Outcome]) -> None:
    parts = urlsplit(url)
    conn = socket.create_connection((parts.hostname, parts.port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    while (started := time.perf_counter()) < stop:
        conn.sendall(request)
        errors += int(_answer(conn, buffer) != 200)
        latencies.append(time.perf_counter() - started)
    conn.close()
    queue.put((latencies, errors))


def load(url: str, body: bytes, media: str, connections: int, seconds: float) -> dict[str, float]:
    """Post ``body`` to ``url``/rank over ``connections`` connections for ``seconds``; latencies in ms."""
    parts = urlsplit(url)
    request = _request(f"{parts.hostname}:{parts.port}", "/rank", body, media)
    queue: multiprocessing.Queue[Outcome] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_connection, args=(url, request, seconds, queue))
        for _ in range(connections)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    latencies = np.concatenate([np.asarray(r[0]) for r in results])
    errors = sum(r[1] for r in results)
    return {
        "rps": latencies.size / seconds,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "errors": errors,
    }
