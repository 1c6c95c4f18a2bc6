"""Reading the docker-compose stack's files: compose, Prometheus config, alert rules, dashboards.

Shared by tests/unit/test_stack_files.py (the files agree with each other and with lwsobs) and
tests/integration/test_stack_prometheus.py (every query runs against a real Prometheus).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus.yml"
ALERTS_YML = ROOT / "deploy" / "alerts.yml"
ALERTS_TEST_YML = ROOT / "deploy" / "alerts.test.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARDS = ROOT / "dashboards"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

METRIC_NAME = re.compile(r"\b(?:lwsobs_[a-z0-9_]+|up|ALERTS)\b")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON in dashboards/, by file name."""
    found = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
    assert found, "no dashboard in dashboards/"
    return found


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows are layout; a collapsed row carries its panels)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel!r} / {self.ref_id}"


def panel_queries() -> list[PanelQuery]:
    queries = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                queries.append(
                    PanelQuery(
                        name,
                        panel.get("title", "?"),
                        target.get("refId", "?"),
                        target.get("expr", ""),
                        bool(target.get("instant")) and not target.get("range"),
                    )
                )
    return queries


def substitute(expr: str, *, window: str, range_: str, source: str = ".*") -> str:
    """Grafana's variables replaced the way Grafana would, with windows that fit a short test."""
    for name in ("$__rate_interval", "${__rate_interval}", "$__interval", "${__interval}"):
        expr = expr.replace(name, window)
    for name in ("$__range", "${__range}"):
        expr = expr.replace(name, range_)
    return expr.replace("${source}", source).replace("$source", source)


def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS_YML)
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (the stack's metrics all start with lwsobs_)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(METRIC_NAME.findall(without_strings))
