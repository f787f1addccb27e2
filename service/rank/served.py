"""What /rank hands to the event log: the served list, cheap to build on the hot path.

``/rank`` builds one ``ServedList`` per response from objects it already has (the parsed candidate
columns, the order and the CTR array) and calls ``ServedListSink.submit``, which must never block: the
event log materializes rows (one per returned item, with its raw features) in a background writer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class ServedList:
    """One /rank response as served.

    Attributes:
        request_id: the response's request_id (events refer to it).
        ts: unix time (seconds) when the response was built.
        experiment, arm, bucket: the A/B assignment of the user.
        model, version: the bundle that scored.
        objective: ``ctr`` or ``ctr_bid``.
        user_id: the request's user_id.
        user, context: the raw user and context feature objects of the request.
        app_ids: the candidates' app_ids, in request order.
        bids: the candidates' bids (NaN where absent), or None when no candidate has one.
        features: the candidates' raw item feature objects (``{}`` where absent).
        order: indices into the candidates of the returned items, best first (length = top_k).
        ctr: predicted CTR of every candidate (request order), float32.
    """

    request_id: str
    ts: float
    experiment: str
    arm: str
    bucket: int
    model: str
    version: str
    objective: str
    user_id: str
    user: Mapping[str, Any]
    context: Mapping[str, Any]
    app_ids: Sequence[str]
    bids: npt.NDArray[np.float64] | None
    features: Sequence[Mapping[str, Any]]
    order: npt.NDArray[np.int64]
    ctr: npt.NDArray[np.float32]


class ServedListSink(Protocol):
    """Receives served lists; ``submit`` returns at once (queue or drop-and-count, never wait)."""

    def submit(self, served: ServedList) -> None: ...


class NullSink:
    """Discards served lists (used when no event store is configured, and in unit tests)."""

    def submit(self, served: ServedList) -> None:
        del served
