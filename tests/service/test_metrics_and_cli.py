"""Prometheus names and labels, feature counters, health endpoints, admin token parsing, the serve command."""

from __future__ import annotations

import re

import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from service.auth import AdminTokens, AuthError
from service.cli import register
from service.settings import ServiceSettings
from tests.service.conftest import ADMIN, fifty_fifty, rank_body

REQUIRED = {
    "apprank_http_requests_total": {"endpoint", "status"},
    "apprank_http_request_duration_seconds_bucket": {"endpoint", "le"},
    "apprank_rank_duration_seconds_bucket": {"experiment", "arm", "le"},
    "apprank_model_inference_seconds_bucket": {"model", "version", "le"},
    "apprank_rank_candidates_bucket": {"le"},
    "apprank_feature_values_total": {"feature"},
    "apprank_feature_oov_total": {"feature"},
    "apprank_feature_missing_total": {"feature"},
    "apprank_item_cache_lookups_total": {"result"},
    "apprank_model_loaded": {"model", "version"},
    "apprank_experiment_weight": {"experiment", "arm"},
}
DECLARED = [
    "apprank_model_load_failures_total",
    "apprank_impressions_total",
    "apprank_downloads_total",
    "apprank_events_rejected_total",
    "apprank_served_lists_dropped_total",
    "apprank_served_log_queue_depth",
    "apprank_experiment_users",
]
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} ")


def value(text: str, sample: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(sample + " "))
    return float(line.rsplit(" ", 1)[1])


def test_metric_names_labels_and_feature_counts(client: TestClient) -> None:
    client.put("/experiments/default", json=fifty_fifty(), headers=ADMIN)
    before = client.get("/metrics").text
    body = rank_body(4)
    body["context"]["city"] = "atlantis"  # out of vocabulary; "weather" is absent: missing
    client.post("/rank", json=body)
    client.post("/rank", json=body)  # the same apps again: item cache hits
    client.post("/rank", json={"user_id": 3})
    client.app.state.service.sync.poll_once()  # type: ignore[attr-defined]  # flush the feature counters
    text = client.get("/metrics").text
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            keys = {pair.split("=")[0] for pair in match.group(2).split(",")}
            labels.setdefault(match.group(1), set()).update(keys)
    for name, expected in REQUIRED.items():
        assert labels.get(name) == expected, name
    for name in DECLARED:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert not {"user_id", "app_id", "user", "item"} & set().union(*labels.values())
    oov = 'apprank_feature_oov_total{feature="city"}'
    missing = 'apprank_feature_missing_total{feature="weather"}'
    assert value(text, oov) - (value(before, oov) if oov in before else 0) == 2
    assert value(text, missing) - (value(before, missing) if missing in before else 0) == 2

    def lookups(text: str, result: str) -> float:
        sample = f'apprank_item_cache_lookups_total{{result="{result}"}}'
        return value(text, sample) if sample in text else 0.0

    hits, misses = (lookups(text, r) - lookups(before, r) for r in ("hit", "miss"))
    assert hits + misses == 8 and hits >= 4
    assert 'apprank_http_requests_total{endpoint="/rank",status="422"}' in text
    assert 'apprank_experiment_weight{arm="treatment",experiment="default"} 50.0' in text


def test_unknown_paths_share_one_endpoint_label(client: TestClient) -> None:
    client.get("/no/such/path/12345")
    assert 'endpoint="unmatched",status="404"' in client.get("/metrics").text
    assert "12345" not in client.get("/metrics").text


def test_health_and_readiness(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "reasons": [], "models": []}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["lr", "lr2"]
    monkeypatch.setattr(client.app.state.service.db, "ping", lambda: False)  # type: ignore[attr-defined]
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["reasons"] == ["experiment store unreachable"]


def test_admin_tokens_parse_and_identify() -> None:
    tokens = AdminTokens.parse("alice:a-secret, bob:b:with:colons")
    assert tokens.identify("Bearer a-secret") == "alice"
    assert tokens.identify("bearer b:with:colons") == "bob"
    assert AdminTokens.parse("only-token").identify("Bearer only-token") == "admin"
    for header, status in ((None, 401), ("Token a-secret", 401), ("Bearer ", 401), ("Bearer nope", 403)):
        with pytest.raises(AuthError) as raised:
            tokens.identify(header)
        assert raised.value.status == status
    for bad in ("alice:", "a b:x", "alice:x,alice:y"):
        with pytest.raises(ValueError, match="APPRANK_ADMIN_TOKEN"):
            AdminTokens.parse(bad)


def test_settings_come_from_apprank_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPRANK_MAX_CANDIDATES", "77")
    monkeypatch.setenv("APPRANK_ADMIN_TOKEN", "ops:t0ken")
    settings = ServiceSettings()
    assert settings.max_candidates == 77 and settings.admin_token is not None
    assert AdminTokens.parse(settings.admin_token.get_secret_value()).identify("Bearer t0ken") == "ops"
    for field, bad in (("table_prefix", "Bad-Prefix"), ("max_candidates", "0"), ("sync_interval_s", "0")):
        with pytest.raises(ValidationError, match=field):
            ServiceSettings.model_validate({field: bad})


def test_serve_command_is_registered() -> None:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--models", "--host", "--port", "--workers"):
        assert option in result.output
