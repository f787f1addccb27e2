"""Writes deploy/grafana/dashboards/apprank.json, the apprank Grafana dashboard, from the panel list below.

The dashboard is kept as code so that panels stay uniform and the queries stay reviewable; the JSON is
committed for Grafana's file provisioning, and tests/deploy checks that it matches this script's output
and that every metric it queries exists. Queries prefer the recording rules of deploy/prometheus/rules.

    python deploy/grafana/build_dashboard.py            # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check    # exit 1 if the JSON is stale
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "apprank.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
EXP = 'experiment=~"$experiment"'
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel; ``width`` is in Grafana's 24-column grid, every panel is 8 rows high."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    extra: dict[str, Any] = field(default_factory=dict)


def _right_axis(series_regex: str, unit: str) -> dict[str, Any]:
    """A field override: the series whose legend matches go on a right axis with their own unit."""
    return {
        "matcher": {"id": "byRegexp", "options": series_regex},
        "properties": [
            {"id": "custom.axisPlacement", "value": "right"},
            {"id": "unit", "value": unit},
        ],
    }


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "A/B test",
        (
            Panel(
                "CTR per arm (5m window)",
                "Downloads / impressions per arm over a sliding 5 minute window (recording rule "
                "experiment_arm:apprank_ctr:ratio_rate5m). Compare arms here; trust the event store's "
                "report (GET /experiments/{name}/report) for intervals and significance.",
                (Query(f"experiment_arm:apprank_ctr:ratio_rate5m{{{EXP}}}", "{{experiment}} / {{arm}}"),),
                unit="percentunit",
            ),
            Panel(
                "Serving version per model",
                "Which version of each model served when (1 while it is the current one on a replica): "
                "read a change of the per-arm CTR beside the version change of its model. New versions "
                "come from the daily retrain; a rollback shows as an older version coming back.",
                (Query("max by (model, version) (apprank_model_loaded) == 1", "{{model}} {{version}}"),),
                kind="state-timeline",
                extra={"options": {"showValue": "never", "mergeValues": True}},
            ),
            Panel(
                "CTR per arm (1h window)",
                "Downloads / impressions per arm over a sliding hour: smoother, slower to react.",
                (Query(f"experiment_arm:apprank_ctr:ratio_rate1h{{{EXP}}}", "{{experiment}} / {{arm}}"),),
                unit="percentunit",
            ),
            Panel(
                "CVR per arm (downloads in the last hour per user)",
                "Downloads of the last hour divided by the distinct users of the arm (from the event "
                "store): the ratio between two arms is the CVR lift over that hour.",
                (
                    Query(
                        f"experiment_arm:apprank_cvr:ratio_increase1h{{{EXP}}}",
                        "{{experiment}} / {{arm}}",
                    ),
                ),
                unit="short",
            ),
            Panel(
                "CTR and CVR since the replicas started",
                "Counters summed over every replica and worker: equal to the event store's figures for "
                "the same events while no replica has restarted.",
                (
                    Query(f"experiment_arm:apprank_ctr:ratio{{{EXP}}}", "CTR {{experiment}} / {{arm}}", True),
                    Query(f"experiment_arm:apprank_cvr:ratio{{{EXP}}}", "CVR {{experiment}} / {{arm}}", True),
                ),
                unit="percentunit",
                kind="bargauge",
                extra={"options": {"displayMode": "basic", "orientation": "horizontal"}},
            ),
            Panel(
                "Traffic split: configured weight vs served share",
                "The router's configured weight per arm and the share of /rank requests each arm "
                "actually served over 5 minutes. They should agree within a point or two.",
                (
                    Query(f"experiment_arm:apprank_experiment_weight:max{{{EXP}}}", "weight {{arm}}"),
                    Query(
                        f"100 * experiment_arm:apprank_rank_requests:rate5m{{{EXP}}}"
                        " / on (experiment) group_left"
                        f" sum by (experiment) (experiment_arm:apprank_rank_requests:rate5m{{{EXP}}})",
                        "served {{arm}}",
                    ),
                ),
                unit="percent",
            ),
            Panel(
                "Impressions, downloads and users per arm",
                "Accepted impression and download events per second, and distinct users per arm.",
                (
                    Query(f"experiment_arm:apprank_impressions:rate5m{{{EXP}}}", "impressions/s {{arm}}"),
                    Query(f"experiment_arm:apprank_downloads:rate5m{{{EXP}}}", "downloads/s {{arm}}"),
                    Query(f"experiment_arm:apprank_users:max{{{EXP}}}", "users {{arm}}"),
                ),
                extra={"fieldConfig_overrides": [_right_axis("users .*", "short")]},
            ),
        ),
    ),
    (
        "Service",
        (
            Panel(
                "Requests per second by endpoint",
                "All HTTP requests, per endpoint, over 5 minutes.",
                (Query("endpoint:apprank_http_requests:rate5m", "{{endpoint}}"),),
                unit="reqps",
            ),
            Panel(
                "Errors",
                "5xx ratio per endpoint (the alert threshold is 5%), and non-2xx answers by status.",
                (
                    Query("endpoint:apprank_http_errors:ratio_rate5m", "5xx ratio {{endpoint}}"),
                    Query(
                        'endpoint_status:apprank_http_requests:rate5m{status!~"2.."}',
                        "{{endpoint}} {{status}} /s",
                    ),
                ),
                unit="percentunit",
                extra={"fieldConfig_overrides": [_right_axis(".* /s", "reqps")]},
            ),
            Panel(
                "/rank latency per arm (p50, p99)",
                "End-to-end /rank time by experiment and arm, from the apprank_rank_duration_seconds "
                "histogram.",
                (
                    Query(
                        f"experiment_arm:apprank_rank_duration_seconds:p50_5m{{{EXP}}}",
                        "p50 {{experiment}} / {{arm}}",
                    ),
                    Query(
                        f"experiment_arm:apprank_rank_duration_seconds:p99_5m{{{EXP}}}",
                        "p99 {{experiment}} / {{arm}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "HTTP latency per endpoint (p50, p99)",
                "Server-side request time per endpoint.",
                (
                    Query("endpoint:apprank_http_request_duration_seconds:p50_5m", "p50 {{endpoint}}"),
                    Query("endpoint:apprank_http_request_duration_seconds:p99_5m", "p99 {{endpoint}}"),
                ),
                unit="s",
            ),
            Panel(
                "Model inference time (p50, p99)",
                "The ONNX Runtime call alone, per model and version.",
                (
                    Query(
                        "model_version:apprank_model_inference_seconds:p50_5m", "p50 {{model}} {{version}}"
                    ),
                    Query(
                        "model_version:apprank_model_inference_seconds:p99_5m", "p99 {{model}} {{version}}"
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Candidates per request",
                "Size of the candidate list of /rank requests: mean, p50 and p99.",
                (
                    Query("apprank:rank_candidates:mean_5m", "mean"),
                    Query("apprank:rank_candidates:p50_5m", "p50"),
                    Query("apprank:rank_candidates:p99_5m", "p99"),
                ),
            ),
        ),
    ),
    (
        "Models and features",
        (
            Panel(
                "Model versions loaded",
                "Number of replicas on which each model version is loaded.",
                (
                    Query(
                        "count by (model, version) (apprank_model_loaded == 1)", "{{model}} {{version}}", True
                    ),
                ),
                kind="table",
                extra={
                    "transformations": [
                        {"id": "labelsToFields", "options": {"mode": "columns"}},
                        {"id": "organize", "options": {"renameByName": {"Value": "replicas"}}},
                    ]
                },
            ),
            Panel(
                "Serving model age and last retrain",
                "Age of each model's serving version (the oldest over the replicas; the alert fires past "
                "two days) and the outcome of its last retrain (published, refused by the gate, failed).",
                (
                    Query("max by (model) (apprank_model_age_seconds)", "age {{model}}"),
                    Query(
                        "max by (model, outcome) (apprank_retrain_outcome) == 1",
                        "retrain {{model}}: {{outcome}}",
                    ),
                ),
                unit="s",
                extra={"fieldConfig_overrides": [_right_axis("retrain .*", "short")]},
            ),
            Panel(
                "Model load failures (1h)",
                "Bundles refused at load or reload in the last hour, per model.",
                (Query("sum by (model) (increase(apprank_model_load_failures_total[1h]))", "{{model}}"),),
            ),
            Panel(
                "Out-of-vocabulary rate per feature",
                "Share of encoded values of each feature that fell out of the vocabulary (index 1). A "
                "rising line means the vocabulary is stale: retrain.",
                (Query("feature:apprank_feature_oov:ratio_rate5m", "{{feature}}"),),
                unit="percentunit",
            ),
            Panel(
                "Missing rate per feature",
                "Share of values of each feature that were absent from the request (index 0).",
                (Query("feature:apprank_feature_missing:ratio_rate5m", "{{feature}}"),),
                unit="percentunit",
            ),
            Panel(
                "Item cache hit ratio",
                "Share of candidates whose item features were encoded from the item cache (the app was "
                "seen before with the same features). A low ratio means the catalogue outgrows "
                "APPRANK_ITEM_CACHE_SIZE, or the features change often; /rank is then slower.",
                (Query("apprank:item_cache_hit:ratio_rate5m", "hit ratio"),),
                unit="percentunit",
            ),
        ),
    ),
    (
        "Event log",
        (
            Panel(
                "Served-list drops and log queue depth",
                "Served lists dropped because the log queue was full (their events will be rejected), "
                "and the deepest queue of any replica.",
                (
                    Query("apprank:served_lists_dropped:rate5m", "dropped/s"),
                    Query("apprank:served_log_queue_depth:max", "queue depth"),
                ),
                extra={"fieldConfig_overrides": [_right_axis("queue depth", "short")]},
            ),
            Panel(
                "Rejected events by reason",
                "Events of POST /events refused, per reason.",
                (Query("reason:apprank_events_rejected:rate5m", "{{reason}}"),),
                unit="ops",
            ),
        ),
    ),
)


def _target(query: Query, ref_id: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend,
        "refId": ref_id,
        "instant": query.instant,
        "range": not query.instant,
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    extra = dict(panel.extra)
    overrides = extra.pop("fieldConfig_overrides", [])
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": overrides},
        "targets": [_target(query, chr(ord("A") + i)) for i, query in enumerate(panel.queries)],
    }
    if panel.kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}
        }
    body.update(extra)
    return body


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        for panel in row_panels:
            if x + panel.width > WIDTH:
                x, y = 0, y + 8
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return panels


def _templating() -> dict[str, Any]:
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {"text": "Prometheus", "value": "prometheus"},
                "hide": 0,
            },
            {
                "name": "experiment",
                "label": "Experiment",
                "type": "query",
                "datasource": DATASOURCE,
                "definition": "label_values(apprank_experiment_weight, experiment)",
                "query": {
                    "query": "label_values(apprank_experiment_weight, experiment)",
                    "refId": "experiments",
                },
                "refresh": 2,
                "multi": True,
                "includeAll": True,
                "current": {"text": "All", "value": "$__all"},
                "sort": 1,
                "hide": 0,
            },
        ]
    }


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    return {
        "uid": "apprank-overview",
        "title": "apprank: ranking service and A/B test",
        "description": "Per-arm CTR and CVR, traffic split, latency, errors, models and features of apprank.",
        "tags": ["apprank"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": _templating(),
        "annotations": {"list": []},
        "panels": _panels(),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        return 0 if OUTPUT.read_text(encoding="utf-8") == text else 1
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
