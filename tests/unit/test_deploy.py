"""deploy/: dashboard and rules query only exported metrics; compose, provisioning, units and image fit together.

Docker cannot run here, so compose.yaml is checked structurally: it loads,
names the services, and every file it mounts or builds from exists. The
PromQL itself runs on a real Prometheus in tests/integration/test_metrics_prometheus.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from permwatch.cli.settings import load_config
from permwatch.cli.wiring import process_metrics
from tests.deploy_exprs import (
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_OWN,
    dashboard_queries,
    exported_names,
    inner_expression,
    metric_names,
    recorded_names,
    rule_queries,
    rules,
)

COMPOSE = DEPLOY / "compose.yaml"
ROLES = ("collector", "processor", "alerts")


def known_names() -> set[str]:
    registry = CollectorRegistry()
    process_metrics(registry)  # the core's and every stage's, as each process registers them
    return exported_names(registry) | PROMETHEUS_OWN | recorded_names()


def unknown_metrics(queries: list[tuple[str, str]]) -> dict[str, set[str]]:
    known = known_names()
    unknown = {where: metric_names(expr) - known for where, expr in queries}
    return {where: names for where, names in unknown.items() if names}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------- PromQL names


def test_dashboard_and_rules_query_only_metrics_the_code_exports() -> None:
    queries = dashboard_queries() + rule_queries()
    assert len(queries) > 25
    assert unknown_metrics(queries) == {}
    used = set().union(*(metric_names(expr) for _, expr in queries))
    assert {"permwatch_detection_latency_seconds_bucket", "permwatch_consumer_lag_records", "up"} <= used


def test_a_panel_querying_a_metric_nobody_exports_is_caught() -> None:
    model = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    broken = copy.deepcopy(model)
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = 'sum(rate(permwatch_events_typo_total{instance=~"$instance"}[5m])) by (le)'
    assert unknown_metrics(dashboard_queries(broken)) == {f"panel {panel['title']!r}": {"permwatch_events_typo_total"}}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m])))', {"a_bucket"}),
        ("time() - max by (source) (b_seconds)", {"b_seconds"}),
        ("deriv(c:d:sum[15m]) > 0.05", {"c:d:sum"}),
        ('up{job=~"permwatch-.*"} == 0 and on (instance) e offset 5m', {"up", "e"}),
        ('sum(rate(f_total[$__rate_interval])) / sum(g{label=~"$label"})', {"f_total", "g"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_alert_is_a_threshold_on_an_expression_that_can_have_data() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {r["alert"] for r in alerts} >= {
        "PermwatchCollectorDown",
        "PermwatchConsumerLagGrowing",
        "PermwatchExposureOpenOverAnHour",
        "PermwatchSinkFailing",
    }
    for rule in alerts:
        assert inner_expression(rule["expr"]) != rule["expr"], rule["alert"]
    assert inner_expression("permwatch_exposure_oldest_age_seconds > 3600") == "permwatch_exposure_oldest_age_seconds"


# -------------------------------------------------------------------- dashboard


def test_dashboard_model() -> None:
    model = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert model["uid"] == "permwatch-overview" and model["schemaVersion"] >= 36
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("instance", "label"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"] and variables[name]["multi"]
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in model["panels"]:
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert "$instance" in target["expr"], panel["title"]  # every query follows the instance picker
    titles = " ".join(p["title"] for p in model["panels"]).lower()
    for topic in ("roles up", "lag", "latency", "open exposure", "alerts delivered"):
        assert topic in titles
    exprs = " ".join(expr for _, expr in dashboard_queries())
    assert "histogram_quantile(0.99" in exprs and '$label"' in exprs


def test_grafana_provisioning_matches_compose() -> None:
    compose = load_yaml(COMPOSE)
    grafana = compose["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    datasource = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/permwatch.yaml")["providers"][0]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


# ---------------------------------------------------------------------- compose


def test_compose_services_and_the_files_they_use() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"kafka", "prometheus", "grafana", *(f"permwatch-{role}" for role in ROLES)}
    named_volumes = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            elif not source.startswith("${"):
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for port in service.get("ports", []):
            host, published, target = port.split(":")
            assert host == "127.0.0.1" and 0 < int(published) < 65536 and 0 < int(target) < 65536
        build = service.get("build")
        if build is not None:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for role in ROLES:
        service = services[f"permwatch-{role}"]
        assert service["command"][-2:] == ["--role", role]
        assert service["environment"]["PERMWATCH__TRANSPORT__KIND"] == "kafka"
        assert service["cap_drop"] == ["ALL"]
    assert services["permwatch-collector"]["cap_add"] == ["DAC_READ_SEARCH"]
    assert all(v.endswith(":ro") for v in services["permwatch-collector"]["volumes"] if "/srv/share" in v)
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper


def test_compose_prometheus_scrapes_each_role_where_it_listens() -> None:
    compose = load_yaml(COMPOSE)
    prometheus = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in prometheus["scrape_configs"]}
    for role in ROLES:
        service = f"permwatch-{role}"
        port = compose["services"][service]["environment"]["PERMWATCH__METRICS__LISTEN"].rsplit(":", 1)[1]
        assert jobs[f"permwatch-{role}"] == [f"{service}:{port}"]
    for rule_file in prometheus["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus/rules"] == "/etc/prometheus/rules"


def test_example_config_is_valid_as_compose_runs_it() -> None:
    compose = load_yaml(COMPOSE)
    environment = compose["services"]["permwatch-processor"]["environment"]
    config = load_config(DEPLOY / "permwatch.example.toml", environ=environment)
    assert config.transport.kind == "kafka" and config.transport.kafka is not None
    assert config.metrics.address == ("0.0.0.0", 9464)
    assert load_config(DEPLOY / "permwatch.example.toml", environ={}).metrics.address == ("127.0.0.1", 9464)


def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for source in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for name in source.split():
            assert (DEPLOY.parent / name).exists(), name
    assert 'ENTRYPOINT ["permwatch"]' in text


# ---------------------------------------------------------------------- systemd


def unit(role: str) -> dict[str, list[str]]:
    """``Section.Key`` → values (keys may repeat, as Environment= does)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / "systemd" / f"permwatch-{role}.service").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


@pytest.mark.parametrize("role", ROLES)
def test_systemd_units(role: str) -> None:
    values = unit(role)
    assert values["Service.Restart"] == ["always"]
    assert values["Service.ExecStart"][0].endswith(f"--role {role}")
    assert values["Service.User"] == ["permwatch"]
    assert values["Install.WantedBy"] == ["multi-user.target"]
    assert any(e.startswith("PERMWATCH__METRICS__LISTEN=127.0.0.1:") for e in values["Service.Environment"])
    if role == "collector":
        assert values["Service.AmbientCapabilities"] == ["CAP_DAC_READ_SEARCH"]
        assert values["Service.CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH"]
    else:
        assert values["Service.CapabilityBoundingSet"] == [""]
        assert "Service.AmbientCapabilities" not in values


def test_the_workshop_store_is_rebuilt_nightly_at_low_priority() -> None:
    values = unit("snapshot")
    assert values["Service.Type"] == ["oneshot"]
    assert values["Service.ExecStart"][0].endswith("permwatch snapshot --config /etc/permwatch/permwatch.toml")
    assert values["Service.User"] == ["permwatch"] and values["Service.CapabilityBoundingSet"] == [""]
    assert values["Service.IOSchedulingClass"] == ["idle"] and int(values["Service.Nice"][0]) > 0
    timer = (DEPLOY / "systemd" / "permwatch-snapshot.timer").read_text(encoding="utf-8")
    assert "OnCalendar=" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer


def test_systemd_units_listen_on_distinct_ports() -> None:
    listens = [
        next(e for e in unit(role)["Service.Environment"] if e.startswith("PERMWATCH__METRICS__LISTEN"))
        for role in ROLES
    ]
    assert len(set(listens)) == len(ROLES)
