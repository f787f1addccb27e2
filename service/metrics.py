"""Prometheus metrics of the service: one definition of every name, shared by every module.

Names are fixed (the Grafana dashboard and the Prometheus rules in ``deploy/`` query them). With several
uvicorn workers, prometheus-client's multiprocess mode is used: ``PROMETHEUS_MULTIPROC_DIR`` must be set
(and wiped) before a worker imports prometheus_client; ``prepare_multiprocess_dir`` does that in the CLI's
parent process, and the (spawned) workers inherit it.

The metrics are module constants (the usual prometheus-client idiom; creating them does no I/O), so other
modules use them directly: ``from service.metrics import IMPRESSIONS``.

Per-feature counters would cost ~50 counter updates per request, so ``FeatureStats`` accumulates them in
numpy arrays on the request path and ``flush`` moves the totals into the counters from a background thread.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Gauge, Histogram

from service.events.counters import EventMetrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.25, 1.0)
CANDIDATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def prepare_multiprocess_dir(path: Path) -> None:
    """Wipe and create the multiprocess directory and point ``PROMETHEUS_MULTIPROC_DIR`` at it.

    Call it in the parent process before workers start (and before prometheus_client is imported).
    """
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)


# Every metric of the service, in prometheus-client's default registry. Creating them is cheap (no I/O);
# in multiprocess mode their values live in files under PROMETHEUS_MULTIPROC_DIR.
HTTP_REQUESTS = Counter(
    "apprank_http_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"]
)
HTTP_DURATION = Histogram(
    "apprank_http_request_duration_seconds", "HTTP request time.", ["endpoint"], buckets=LATENCY_BUCKETS
)
RANK_DURATION = Histogram(
    "apprank_rank_duration_seconds",
    "Whole /rank handling time.",
    ["experiment", "arm"],
    buckets=LATENCY_BUCKETS,
)
MODEL_INFERENCE = Histogram(
    "apprank_model_inference_seconds",
    "ONNX Runtime run time.",
    ["model", "version"],
    buckets=INFERENCE_BUCKETS,
)
RANK_CANDIDATES = Histogram("apprank_rank_candidates", "Candidates per request.", buckets=CANDIDATE_BUCKETS)
FEATURE_VALUES = Counter("apprank_feature_values", "Feature values encoded.", ["feature"])
FEATURE_OOV = Counter("apprank_feature_oov", "Out-of-vocabulary feature values.", ["feature"])
FEATURE_MISSING = Counter("apprank_feature_missing", "Missing feature values.", ["feature"])
ITEM_CACHE_LOOKUPS = Counter(
    "apprank_item_cache_lookups", "Candidates looked up in the item encoding cache.", ["result"]
)
SERVED_VALUES_CUT = Counter(
    "apprank_served_values_cut",
    "Feature values of served lists not logged whole: unknown fields dropped, long values cut.",
    ["reason"],
)
MODEL_LOADED = Gauge(
    "apprank_model_loaded",
    "1 while a model version is loaded and current (what the plain model name serves), else 0.",
    ["model", "version"],
    multiprocess_mode="livemax",
)
MODEL_LOAD_FAILURES = Counter("apprank_model_load_failures", "Bundles refused at load.", ["model"])
MODEL_AGE = Gauge(
    "apprank_model_age_seconds",
    "Age of the serving version of a model (since its bundle was created).",
    ["model"],
    multiprocess_mode="livemin",
)
# The last `apprank retrain` of a model, read from the status file it leaves on the models volume.
RETRAIN_OUTCOME = Gauge(
    "apprank_retrain_outcome",
    "1 for the outcome of the last retrain (published, refused by the gate, failed), 0 for the others.",
    ["model", "outcome"],
    multiprocess_mode="livemax",
)
RETRAIN_FINISHED = Gauge(
    "apprank_retrain_last_run_timestamp_seconds",
    "When the last retrain of a model finished (unix time).",
    ["model"],
    multiprocess_mode="livemax",
)
EXPERIMENT_WEIGHT = Gauge(
    "apprank_experiment_weight",
    "Percent of traffic per arm.",
    ["experiment", "arm"],
    multiprocess_mode="livemostrecent",
)

# Incremented by the event log (service/events, given them by ``event_metrics``); defined here so there
# is one set of definitions.
IMPRESSIONS = Counter("apprank_impressions", "Impressions logged.", ["experiment", "arm"])
DOWNLOADS = Counter("apprank_downloads", "Downloads logged.", ["experiment", "arm"])
EVENTS_REJECTED = Counter("apprank_events_rejected", "Events rejected.", ["reason"])
SERVED_LISTS_DROPPED = Counter("apprank_served_lists_dropped", "Served lists dropped.")
SERVED_LIST_RETRIES = Counter(
    "apprank_served_list_retries", "Served-list writes failed on the database and retried (lists)."
)
SERVED_WRITER_RESTARTS = Counter(
    "apprank_served_log_writer_restarts", "Served-list writer processes that died and were restarted."
)
SERVED_LOG_QUEUE_DEPTH = Gauge(
    "apprank_served_log_queue_depth", "Served lists waiting to be written.", multiprocess_mode="livesum"
)
EXPERIMENT_USERS = Gauge(
    "apprank_experiment_users",
    "Distinct users per arm.",
    ["experiment", "arm"],
    multiprocess_mode="livemostrecent",
)


def event_metrics() -> EventMetrics:
    """The collectors the event log updates."""
    return EventMetrics(
        served_lists_dropped=SERVED_LISTS_DROPPED,
        served_list_retries=SERVED_LIST_RETRIES,
        served_log_queue_depth=SERVED_LOG_QUEUE_DEPTH,
        served_writer_restarts=SERVED_WRITER_RESTARTS,
        served_values_cut=SERVED_VALUES_CUT,
        events_rejected=EVENTS_REJECTED,
        impressions=IMPRESSIONS,
        downloads=DOWNLOADS,
        experiment_users=EXPERIMENT_USERS,
    )


def render_latest() -> tuple[bytes, str]:
    """The exposition text and its content type, aggregated over workers in multiprocess mode."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class FeatureStats:
    """Per-feature value, missing and OOV counts, accumulated cheaply and flushed in the background."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._lock = threading.Lock()
        self._counts = np.zeros((3, len(self.names)), dtype=np.int64)

    def add_many(self, counts: npt.NDArray[np.int64]) -> None:
        """Add a ``[3, F]`` array (values, missing, oov per field, in ``names`` order)."""
        with self._lock:
            self._counts += counts

    def pending(self) -> dict[str, tuple[int, int, int]]:
        """The counts not flushed yet, per field: (values, missing, out of vocabulary)."""
        with self._lock:
            counts = self._counts.copy()
        return {name: (int(v), int(m), int(o)) for name, (v, m, o) in zip(self.names, counts.T, strict=True)}

    def flush(self) -> None:
        """Move the accumulated counts into the Prometheus counters."""
        with self._lock:
            counts, self._counts = self._counts, np.zeros_like(self._counts)
        for i, name in enumerate(self.names):
            values, missing, oov = (int(v) for v in counts[:, i])
            if values:
                FEATURE_VALUES.labels(name).inc(values)
            if missing:
                FEATURE_MISSING.labels(name).inc(missing)
            if oov:
                FEATURE_OOV.labels(name).inc(oov)
