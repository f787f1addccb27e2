"""Metric names used by PromQL expressions, resolved through the recording rules to the service's metrics.

Not a PromQL parser: it removes what cannot hold a metric name (string literals, label matchers, range
and offset durations, grouping label lists), drops function names and keywords, and keeps the rest.
That is exact for the expressions this repository writes, and the tests pin it on examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = (PROMETHEUS_DIR / "rules" / "recording.yml", PROMETHEUS_DIR / "rules" / "alerts.yml")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![a-zA-Z0-9_:])(?!\s*\()")
_KEYWORDS = frozenset("and or unless bool by without on ignoring group_left group_right inf nan".split())
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,")

# Series Prometheus makes itself for every target; not exported by the service.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def metric_names(expr: str) -> set[str]:
    """Names of the series selected by a PromQL expression (metrics or recording rules)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    while True:
        stripped = _GROUPING.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def label_values_metric(query: str) -> str | None:
    """The metric of a Grafana ``label_values(metric, label)`` variable query, if it is one."""
    match = _LABEL_VALUES.search(query)
    return match.group(1) if match else None


@dataclass(frozen=True)
class RuleSet:
    """The rules of deploy/prometheus: recording rule name -> expression, alert name -> expression."""

    recording: Mapping[str, str]
    alerts: Mapping[str, str]

    def leaves(self, names: Iterable[str]) -> set[str]:
        """Replace recording-rule names by the metrics their expressions read, recursively."""
        result: set[str] = set()
        pending = list(names)
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.recording:
                pending.extend(metric_names(self.recording[name]))
            else:
                result.add(name)
        return result


def load_rules(files: Iterable[Path] = RULE_FILES) -> RuleSet:
    recording: dict[str, str] = {}
    alerts: dict[str, str] = {}
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in document["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recording[rule["record"]] = rule["expr"]
                else:
                    alerts[rule["alert"]] = rule["expr"]
    return RuleSet(recording, alerts)


def exposed_series(families: Mapping[str, str]) -> set[str]:
    """Sample names a registry exposes, from its metric families (family name -> type).

    prometheus-client names a counter family without its ``_total`` suffix.
    """
    series: set[str] = set()
    for name, kind in families.items():
        if kind == "counter":
            series.add(f"{name}_total")
        elif kind == "histogram":
            series.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        else:
            series.add(name)
    return series
