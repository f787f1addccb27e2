"""Counters of the event log, kept in memory and forwarded to the Prometheus metrics it is given.

The service passes its collectors (``service.metrics.event_metrics()``) when it builds the event log;
without them (tests, tools) the in-memory counters (``snapshot()``) are all there is.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import prometheus_client as prom


@dataclass(frozen=True)
class EventMetrics:
    """The Prometheus collectors the event log updates; any of them may be left out."""

    served_lists_dropped: prom.Counter | None = None
    served_list_retries: prom.Counter | None = None  # lists whose write failed on the database, retried
    served_log_queue_depth: prom.Gauge | None = None
    served_writer_restarts: prom.Counter | None = None  # the writer process died and was restarted
    served_values_cut: prom.Counter | None = None  # {reason}: counted by the writer process
    events_rejected: prom.Counter | None = None  # {reason}
    impressions: prom.Counter | None = None  # {experiment, arm}
    downloads: prom.Counter | None = None  # {experiment, arm}
    experiment_users: prom.Gauge | None = None  # {experiment, arm}: distinct users in the store


class EventCounters:
    """Dropped served lists, queue depth, rejected events by reason, accepted events and users by arm."""

    def __init__(self, metrics: EventMetrics | None = None) -> None:
        self.metrics = metrics or EventMetrics()
        self._lock = threading.Lock()
        self.dropped = 0
        self.retried = 0
        self.writer_restarts = 0
        self.queue_depth = 0
        self.rejected: Counter[str] = Counter()
        self.accepted: Counter[tuple[str, str, str]] = Counter()
        self.users: dict[tuple[str, str], int] = {}

    def served_list_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count
        if self.metrics.served_lists_dropped is not None:
            self.metrics.served_lists_dropped.inc(count)

    def served_list_retried(self, count: int) -> None:
        """Served lists whose write failed on the database and that stay queued for another attempt."""
        with self._lock:
            self.retried += count
        if self.metrics.served_list_retries is not None:
            self.metrics.served_list_retries.inc(count)

    def served_writer_restarted(self) -> None:
        """The writer process died and was started again."""
        with self._lock:
            self.writer_restarts += 1
        if self.metrics.served_writer_restarts is not None:
            self.metrics.served_writer_restarts.inc()

    def served_values_cut(self, unknown_field: int, too_long: int) -> None:
        """Values the writer process left out of the log (``service.rank.served.logged_json``)."""
        metric = self.metrics.served_values_cut
        if metric is None:
            return
        if unknown_field:
            metric.labels(reason="unknown_field").inc(unknown_field)
        if too_long:
            metric.labels(reason="too_long").inc(too_long)

    def served_queue_depth(self, depth: int) -> None:
        self.queue_depth = depth
        if self.metrics.served_log_queue_depth is not None:
            self.metrics.served_log_queue_depth.set(depth)

    def events_rejected(self, reasons: Counter[str]) -> None:
        with self._lock:
            self.rejected.update(reasons)
        metric = self.metrics.events_rejected
        if metric is not None:
            for reason, count in reasons.items():
                metric.labels(reason=reason).inc(count)

    def events_accepted(self, by_arm: Counter[tuple[str, str, str]]) -> None:
        """Count newly stored events by (experiment, arm, type)."""
        with self._lock:
            self.accepted.update(by_arm)
        for (experiment, arm, kind), count in by_arm.items():
            metric = self.metrics.impressions if kind == "impression" else self.metrics.downloads
            if metric is not None:
                metric.labels(experiment=experiment, arm=arm).inc(count)

    @property
    def tracks_experiment_users(self) -> bool:
        """True when the service defines the distinct-users gauge (worth a periodic store query)."""
        return self.metrics.experiment_users is not None

    def experiment_users(self, counts: list[tuple[str, str, int]]) -> None:
        """Set the distinct users of each (experiment, arm)."""
        with self._lock:
            self.users = {(experiment, arm): users for experiment, arm, users in counts}
        metric = self.metrics.experiment_users
        if metric is not None:
            for experiment, arm, users in counts:
                metric.labels(experiment=experiment, arm=arm).set(users)

    def snapshot(self) -> dict[str, Any]:
        """The in-memory counters as plain JSON-able data."""
        with self._lock:
            return {
                "served_lists_dropped": self.dropped,
                "served_list_retries": self.retried,
                "served_writer_restarts": self.writer_restarts,
                "served_log_queue_depth": self.queue_depth,
                "events_rejected": dict(self.rejected),
                "events_accepted": [
                    {"experiment": e, "arm": a, "type": t, "count": n}
                    for (e, a, t), n in sorted(self.accepted.items())
                ],
            }
