"""The service's metrics as the deploy files rely on them: the agreed list, and the live registry."""

from __future__ import annotations

import importlib

from tests.conftest import require

# The names and types agreed with the service (issue 5); rules and dashboard may use any of them.
CONTRACT: dict[str, str] = {
    "apprank_http_requests": "counter",
    "apprank_http_request_duration_seconds": "histogram",
    "apprank_rank_duration_seconds": "histogram",
    "apprank_model_inference_seconds": "histogram",
    "apprank_rank_candidates": "histogram",
    "apprank_feature_values": "counter",
    "apprank_feature_oov": "counter",
    "apprank_feature_missing": "counter",
    "apprank_item_cache_lookups": "counter",
    "apprank_model_loaded": "gauge",
    "apprank_model_load_failures": "counter",
    "apprank_model_age_seconds": "gauge",
    "apprank_retrain_outcome": "gauge",
    "apprank_retrain_last_run_timestamp_seconds": "gauge",
    "apprank_experiment_weight": "gauge",
    "apprank_impressions": "counter",
    "apprank_downloads": "counter",
    "apprank_events_rejected": "counter",
    "apprank_served_lists_dropped": "counter",
    "apprank_served_log_queue_depth": "gauge",
    "apprank_experiment_users": "gauge",
}


def registry_families() -> dict[str, str]:
    """Family name -> type of every ``apprank_*`` metric that service/metrics.py registers."""
    try:
        from prometheus_client import REGISTRY

        module = importlib.import_module("service.metrics")
    except ImportError as error:
        require(False, f"service.metrics and prometheus_client ({error})")
        raise
    factory = getattr(module, "metrics", None)
    if callable(factory):  # metrics created lazily by a factory rather than at import
        factory()
    return {family.name: family.type for family in REGISTRY.collect() if family.name.startswith("apprank_")}
