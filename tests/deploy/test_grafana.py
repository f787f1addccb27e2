"""deploy/grafana: the dashboard is current with its generator, well formed, provisioned, and queries only
metrics the service exports (recording rules resolved to their sources)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.deploy.promql import REPO, SYNTHETIC, exposed_series, label_values_metric, load_rules, metric_names
from tests.deploy.service_metrics import registry_families

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "apprank.json"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def queries() -> list[str]:
    exprs = [target["expr"] for panel in panels() for target in panel["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            metric = label_values_metric(variable["definition"])
            assert metric is not None, variable
            exprs.append(metric)
    return exprs


def test_committed_json_matches_the_generator() -> None:
    """Edit deploy/grafana/build_dashboard.py, then run it: the JSON is its output."""
    assert DASHBOARD.read_text(encoding="utf-8") == load_generator().render()


def test_every_queried_metric_is_exported_by_the_service() -> None:
    rules = load_rules()
    exported = exposed_series(registry_families()) | SYNTHETIC
    unknown = {expr: sorted(rules.leaves(metric_names(expr)) - exported) for expr in queries()}
    assert {expr: names for expr, names in unknown.items() if names} == {}


def test_recording_rule_names_in_queries_exist() -> None:
    """A name with colons is a recording rule: it must be defined, or the panel stays empty."""
    recording = load_rules().recording
    used = {name for expr in queries() for name in metric_names(expr) if ":" in name}
    assert used and used - set(recording) == set()


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    used = {name for expr in queries() for name in metric_names(expr)}
    assert {
        "experiment_arm:apprank_ctr:ratio_rate5m",
        "experiment_arm:apprank_cvr:ratio_increase1h",
        "endpoint:apprank_http_requests:rate5m",
        "experiment_arm:apprank_rank_duration_seconds:p50_5m",
        "experiment_arm:apprank_rank_duration_seconds:p99_5m",
        "endpoint:apprank_http_errors:ratio_rate5m",
        "apprank:rank_candidates:mean_5m",
        "apprank_model_loaded",
        "experiment_arm:apprank_experiment_weight:max",
        "feature:apprank_feature_oov:ratio_rate5m",
        "apprank:served_lists_dropped:rate5m",
    } <= used


def test_panels_are_well_formed() -> None:
    every = dashboard()["panels"]
    assert len({panel["id"] for panel in every}) == len(every)
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
    # no two panels overlap
    cells = [
        (panel["gridPos"]["y"] + dy, panel["gridPos"]["x"] + dx)
        for panel in every
        for dy in range(panel["gridPos"]["h"])
        for dx in range(panel["gridPos"]["w"])
    ]
    assert len(cells) == len(set(cells))


def test_provisioning_points_at_the_mounted_dashboards_and_prometheus() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "apprank.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    variable = dashboard()["templating"]["list"][0]
    assert variable["type"] == "datasource" and variable["current"]["value"] == datasource["uid"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{path}/apprank.json"


def test_generator_check_mode_detects_a_stale_dashboard(tmp_path: Path) -> None:
    generator: Any = load_generator()
    stale = tmp_path / "apprank.json"
    stale.write_text("{}\n")
    generator.OUTPUT = stale
    assert generator.main(["--check"]) == 1
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
