"""deploy/prometheus: promtool accepts the config and the rules, the rule unit tests pass, and every rule
reads only metrics the service exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import (
    PROMETHEUS_DIR,
    SYNTHETIC,
    RuleSet,
    exposed_series,
    label_values_metric,
    load_rules,
    metric_names,
)
from tests.deploy.service_metrics import CONTRACT, registry_families

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*_test.yml"))


def run(command: list[str], cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_config_and_its_rule_files(promtool: str) -> None:
    result = run([promtool, "check", "config", "prometheus.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", "rules/recording.yml", "rules/alerts.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL syntax error is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: g\n    rules:\n      - record: a:b:c\n        expr: sum(rate(x[5m])\n"
    )
    result = run([promtool, "check", "rules", str(broken)])
    assert result.returncode != 0


@pytest.mark.parametrize("unit_test", RULE_TESTS, ids=lambda path: path.name)
def test_rule_unit_tests_pass(promtool: str, unit_test: Path) -> None:
    result = run([promtool, "test", "rules", str(unit_test.relative_to(PROMETHEUS_DIR))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_cover_recording_rules_and_alerts() -> None:
    names = {path.name for path in RULE_TESTS}
    assert {"recording_test.yml", "alerts_test.yml"} <= names


def test_scrape_config_discovers_every_compose_replica() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "apprank")
    assert job["dns_sd_configs"] == [
        {"names": ["apprank"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_service_registry_exports_the_agreed_metrics() -> None:
    families = registry_families()
    assert {name: families.get(name) for name in CONTRACT} == CONTRACT


def test_every_rule_reads_only_exported_metrics() -> None:
    rules = load_rules()
    exported = exposed_series(registry_families()) | SYNTHETIC
    unknown = {
        name: sorted(rules.leaves(metric_names(expr)) - exported)
        for name, expr in {**rules.recording, **rules.alerts}.items()
    }
    assert {name: missing for name, missing in unknown.items() if missing} == {}


def test_every_recording_rule_is_used_or_reads_metrics() -> None:
    """Each recording rule resolves to at least one service metric (no rule over a misspelt name)."""
    rules = load_rules()
    for name, expr in rules.recording.items():
        assert any(leaf.startswith("apprank_") for leaf in rules.leaves(metric_names(expr))), name


def test_recording_rule_names_follow_level_metric_operations() -> None:
    pattern = re.compile(r"^[a-z_]+:apprank_[a-z0-9_]+:[a-z0-9_]+$|^apprank:[a-z0-9_]+:[a-z0-9_]+$")
    assert [name for name in load_rules().recording if not pattern.match(name)] == []


def test_alerts_have_a_duration_severity_and_text() -> None:
    document = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    for rule in document["groups"][0]["rules"]:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_required_alerts_exist() -> None:
    assert {
        "ApprankHighErrorRate",
        "ApprankRankLatencyHigh",
        "ApprankArmNoTraffic",
        "ApprankModelLoadFailing",
        "ApprankNoModelLoaded",
        "ApprankServedListsDropped",
        "ApprankServingModelStale",
        "ApprankRetrainFailed",
    } <= set(load_rules().alerts)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (experiment, arm) (rate(apprank_impressions_total{arm=~"a|b"}[5m]))',
            {"apprank_impressions_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(apprank_rank_candidates_bucket[$__rate_interval])))",
            {"apprank_rank_candidates_bucket"},
        ),
        (
            "a:b:c > 0 unless on (experiment, arm) (x_total offset 5m > 1e3) and on (e) group_left y",
            {"a:b:c", "x_total", "y"},
        ),
        ('100 * m{status!~"5.."} / on (e) group_left sum without (instance) (n)', {"m", "n"}),
        ("count by (model, version) (apprank_model_loaded == 1)", {"apprank_model_loaded"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_label_values_metric() -> None:
    assert (
        label_values_metric("label_values(apprank_experiment_weight, experiment)")
        == "apprank_experiment_weight"
    )
    assert label_values_metric("query_result(up)") is None


def test_rule_resolution_reaches_source_metrics() -> None:
    rules = RuleSet({"a:b:ratio": "a:b:rate5m / a:c:rate5m", "a:b:rate5m": "rate(b_total[5m])"}, {})
    assert rules.leaves({"a:b:ratio", "up"}) == {"b_total", "a:c:rate5m", "up"}
