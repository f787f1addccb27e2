"""Counters of the event log, kept in memory and forwarded to Prometheus when the service defines them.

The service owns ``service/metrics.py`` (multiprocess-safe Prometheus metrics). When that module
defines collectors with the names below, ``EventCounters.from_service_metrics()`` finds them by their
Prometheus name (through the public ``describe()``), so no attribute names are assumed; otherwise the
plain in-memory counters (``snapshot()``) are all there is.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

SERVED_DROPPED = "apprank_served_lists_dropped"  # Counter: apprank_served_lists_dropped_total
SERVED_QUEUE_DEPTH = "apprank_served_log_queue_depth"  # Gauge
EVENTS_REJECTED = "apprank_events_rejected"  # Counter{reason}
IMPRESSIONS = "apprank_impressions"  # Counter{experiment, arm}
DOWNLOADS = "apprank_downloads"  # Counter{experiment, arm}
EXPERIMENT_USERS = "apprank_experiment_users"  # Gauge{experiment, arm}: distinct users in the store
_NAMES = (SERVED_DROPPED, SERVED_QUEUE_DEPTH, EVENTS_REJECTED, IMPRESSIONS, DOWNLOADS, EXPERIMENT_USERS)


class EventCounters:
    """Dropped served lists, queue depth, rejected events by reason, accepted events and users by arm."""

    def __init__(self, prometheus: dict[str, Any] | None = None) -> None:
        self._prometheus = prometheus or {}
        self._lock = threading.Lock()
        self.dropped = 0
        self.queue_depth = 0
        self.rejected: Counter[str] = Counter()
        self.accepted: Counter[tuple[str, str, str]] = Counter()
        self.users: dict[tuple[str, str], int] = {}

    @classmethod
    def from_service_metrics(cls, module: str = "service.metrics") -> EventCounters:
        """Counters forwarding to the collectors of ``module`` that carry the event log's names.

        Collectors are looked for among the module's globals and, when the module has a ``metrics()``
        factory (the service's process-wide ``Metrics``), among that object's attributes.
        """
        try:
            metrics_module = importlib.import_module(module)
        except ImportError:
            log.info("%s not found: event log counters are in-memory only", module)
            return cls()
        candidates = list(vars(metrics_module).values())
        factory = getattr(metrics_module, "metrics", None)
        if callable(factory):
            candidates.extend(vars(factory()).values())
        found = _collectors_by_name(candidates)
        missing = sorted(set(_NAMES) - set(found))
        if missing:
            log.warning("%s lacks the event log metrics %s; those stay in-memory only", module, missing)
        return cls(found)

    def served_list_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count
        if SERVED_DROPPED in self._prometheus:
            self._prometheus[SERVED_DROPPED].inc(count)

    def served_queue_depth(self, depth: int) -> None:
        self.queue_depth = depth
        if SERVED_QUEUE_DEPTH in self._prometheus:
            self._prometheus[SERVED_QUEUE_DEPTH].set(depth)

    def events_rejected(self, reasons: Counter[str]) -> None:
        with self._lock:
            self.rejected.update(reasons)
        metric = self._prometheus.get(EVENTS_REJECTED)
        if metric is not None:
            for reason, count in reasons.items():
                metric.labels(reason=reason).inc(count)

    def events_accepted(self, by_arm: Counter[tuple[str, str, str]]) -> None:
        """Count newly stored events by (experiment, arm, type)."""
        with self._lock:
            self.accepted.update(by_arm)
        for (experiment, arm, kind), count in by_arm.items():
            metric = self._prometheus.get(IMPRESSIONS if kind == "impression" else DOWNLOADS)
            if metric is not None:
                metric.labels(experiment=experiment, arm=arm).inc(count)

    @property
    def tracks_experiment_users(self) -> bool:
        """True when the service defines the distinct-users gauge (worth a periodic store query)."""
        return EXPERIMENT_USERS in self._prometheus

    def experiment_users(self, counts: list[tuple[str, str, int]]) -> None:
        """Set the distinct users of each (experiment, arm)."""
        with self._lock:
            self.users = {(experiment, arm): users for experiment, arm, users in counts}
        metric = self._prometheus.get(EXPERIMENT_USERS)
        if metric is not None:
            for experiment, arm, users in counts:
                metric.labels(experiment=experiment, arm=arm).set(users)

    def snapshot(self) -> dict[str, Any]:
        """The in-memory counters as plain JSON-able data."""
        with self._lock:
            return {
                "served_lists_dropped": self.dropped,
                "served_log_queue_depth": self.queue_depth,
                "events_rejected": dict(self.rejected),
                "events_accepted": [
                    {"experiment": e, "arm": a, "type": t, "count": n}
                    for (e, a, t), n in sorted(self.accepted.items())
                ],
            }


def _collectors_by_name(candidates: list[Any]) -> dict[str, Any]:
    """The Prometheus collectors among ``candidates`` whose metric family has one of the log's names."""
    found: dict[str, Any] = {}
    for value in candidates:
        describe = getattr(value, "describe", None)
        if isinstance(value, type) or not callable(describe):
            continue
        try:
            names = {family.name for family in describe()}
        except Exception:  # noqa: BLE001 - an unrelated object with a describe() of its own
            continue
        found.update({name: value for name in _NAMES if name in names})
    return found
