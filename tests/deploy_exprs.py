"""The PromQL in deploy/: every expression of the Grafana dashboard and of the Prometheus rules, and its metrics.

Shared by the unit test that compares those names with what ``process_metrics``
registers and by the integration test that runs each expression on a real
Prometheus. The name extraction is deliberately simple (no PromQL parser): it
drops strings, label matchers, ranges and grouping clauses, then keeps every
identifier that is not a function, an aggregation or a keyword.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "permwatch.json"
RULES = DEPLOY / "prometheus" / "rules" / "permwatch.yml"
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target."""

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"inf", "nan", "Inf", "NaN"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)
_TRAILING_COMPARISON = re.compile(r"^(.*?)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?[0-9.]+(?:e[+-]?\d+)?\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1) not in _KEYWORDS
    }


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable (its selector) of the dashboard."""
    model = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [(f"panel {panel['title']!r}", target["expr"]) for panel in _panels(model) for target in _targets(panel)]
    for variable in model.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        selector = _LABEL_VALUES.match(text)
        found.append((f"variable {variable['name']!r}", selector.group(1) if selector else text))
    return found


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_queries() -> list[tuple[str, str]]:
    return [(f"rule {rule.get('alert') or rule['record']}", rule["expr"]) for rule in rules()]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def inner_expression(expr: str) -> str:
    """An alert's expression without its final threshold: ``x > 3600`` → ``x`` (what must have data)."""
    match = _TRAILING_COMPARISON.match(expr.strip())
    return match.group(1) if match else expr


def with_variables(expr: str, *, rate_interval: str = "1m") -> str:
    """Grafana's variables as the dashboard's "All" would expand them."""
    for name in ("instance", "label"):
        expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
    return expr.replace("$__rate_interval", rate_interval)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry's metrics produce (``_total``, ``_bucket``, ... included)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names = set()
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def _targets(panel: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for target in panel.get("targets", []):
        if "expr" in target:
            yield target
