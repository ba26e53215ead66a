"""The dashboard's and the alert rules' PromQL on a real Prometheus scraping a real pipeline on real Kafka.

The three roles run as ``permwatch run --role …`` processes, each serving
``/metrics`` on a free loopback port it logs; Debian's Prometheus scrapes them
every second with deploy/'s alert rules loaded. After a scripted exposure
(``setfacl`` on a labelled folder) and one malformed record, every expression of
the dashboard returns data through ``/api/v1/query``; an alert rule's condition
is meant to be empty on a healthy pipeline, so its expression without the
threshold must return data instead.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from tests.deploy_exprs import RULES, dashboard_queries, inner_expression, rules, with_variables
from tests.integration.pipeline import ROLES, Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

MGMT, STAFF = 32001, 32002
DIRECTORY = {
    "users": [
        {"name": "anna", "uid": 33001, "primary_group": "ledningsgrupp"},
        {"name": "bo", "uid": 33002, "primary_group": "alla"},
        {"name": "cia", "uid": 33003, "primary_group": "alla"},
    ],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
        {"name": "alla", "gid": STAFF, "members": ["bo", "cia"]},
    ],
}


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


@pytest.fixture(scope="module")
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-metrics-") as base:
        yield base / "share"


@pytest.fixture(scope="module")
def pipeline(kafka_broker: KafkaBroker, share: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    share.mkdir()
    os.chmod(share, 0o755)
    folder = share / "ledning"
    folder.mkdir()
    os.chown(folder, 0, MGMT)
    os.chmod(folder, 0o750)
    (folder / "protokoll.txt").write_text("personal data\n")
    workdir = tmp_path_factory.mktemp("metrics-pipeline")
    pipe = Pipeline(
        workdir,
        kafka_broker.bootstrap,
        f"m{os.getpid()}.",
        share=share,
        config_extra='[metrics]\nlisten = "127.0.0.1:0"\n',
    )
    pipe.directory_path.write_text(yaml.safe_dump(DIRECTORY), encoding="utf-8")
    pipe.write_config(
        f'[labels.definitions.ledning]\nseverity = "critical"\nallowed_groups = ["ledningsgrupp"]\n'
        f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
    )
    pipe.start_all()
    try:
        wait_until(lambda: pipe.reader("labels").read(), "the label")
        pipe.wait_fs_event(folder / "protokoll.txt")
        pipe.wait_quiet()
        yield pipe
    finally:
        pipe.stop()
        for role in ROLES:
            log = pipe.log(role)
            assert "Traceback" not in log, f"{role} log:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def prometheus(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    jobs = {f"permwatch-{role}": [f"127.0.0.1:{pipeline.metrics_port(role)}"] for role in ROLES}
    server.start(jobs, rule_files=[RULES])
    try:
        wait_until(
            lambda: (health := server.targets_up()) and set(health.values()) == {"up"} and len(health) == 3,
            "Prometheus to scrape every role",
        )
        yield server
    finally:
        server.stop()


def expose_and_dead_letter(pipe: Pipeline, folder: Path) -> dict[str, Any]:
    mark = len(pipe.exposures())
    subprocess.run(["setfacl", "-m", f"g:{STAFF}:rx", str(folder)], check=True)
    opened = wait_until(
        lambda: next((e for e in pipe.exposures()[mark:] if e["status"] == "opened"), None), "the exposure"
    )
    producer = KafkaProducer(bootstrap_servers=pipe.bootstrap, acks="all")
    producer.send(pipe.prefix + "fs", key=b"/x", value=b"{not json")
    producer.flush()
    producer.close()
    return opened


def test_dashboard_and_rule_expressions_return_data(
    pipeline: Pipeline, prometheus: PrometheusServer, share: Path
) -> None:
    folder = share / "ledning"
    opened = expose_and_dead_letter(pipeline, folder)
    assert opened["groups"] == ["alla"]
    wait_until(
        lambda: (
            values(prometheus.query('permwatch_exposures_open{label="ledning"}')) == [1.0]
            and values(prometheus.query('permwatch_dead_letters_total{stage="processor",reason="invalid"}')) == [1.0]
            and prometheus.query("permwatch:consumer_lag_records:sum")
        ),
        "Prometheus to scrape the open exposure and the dead letter",
    )

    queries = [(where, with_variables(expr, rate_interval="5m")) for where, expr in dashboard_queries()]
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        queries.append((f"rule {name}", inner_expression(rule["expr"]) if "alert" in rule else rule["record"]))
    empty = {where: expr for where, expr in queries if not prometheus.query(expr)}
    deadline = time.monotonic() + 15  # a rate() over a series that just appeared needs a second scrape
    while empty and time.monotonic() < deadline:
        time.sleep(0.5)
        empty = {where: expr for where, expr in empty.items() if not prometheus.query(expr)}
    assert empty == {}, "expressions without data"

    # the numbers behind them are the right ones
    assert values(prometheus.query('up{job=~"permwatch-.*"}')) == [1.0, 1.0, 1.0]
    p99 = values(
        prometheus.query("histogram_quantile(0.99, sum by (le) (rate(permwatch_detection_latency_seconds_bucket[5m])))")
    )
    assert len(p99) == 1 and 0 < p99[0] < 5, p99
    partitions = prometheus.query('permwatch_consumer_lag_records{group=~".*processor"}')
    assert {(s["metric"]["topic"], s["metric"]["partition"]) for s in partitions} == {
        (topic, str(p)) for topic in ("fs", "directory", "labels", "decisions") for p in range(3)
    }
    age = values(prometheus.query('permwatch_exposure_oldest_age_seconds{label="ledning",severity="critical"}'))
    assert len(age) == 1 and 0 < age[0] < 120
    scans = prometheus.query('permwatch_fs_scans_total{reason="baseline"}')
    assert values(scans) == [1.0] and scans[0]["metric"]["collector"] == "it-fs"
    published = prometheus.query('permwatch_collector_events_published_total{type="fs.permission"}')
    assert values(published)[0] >= 4
    assert values(prometheus.query('permwatch_directory_sync_ok{source="directory-file"}')) == [1.0]
    assert values(prometheus.query('permwatch_alerts_delivered_total{sink="jsonl"}'))  # exported per sink

    # the rules evaluate without error, and none fires on this healthy pipeline
    groups = prometheus.api("rules")["groups"]
    assert {r["name"]: r["health"] for g in groups for r in g["rules"]} == {
        r.get("alert") or r["record"]: "ok" for r in rules()
    }
    alerts = prometheus.api("alerts")["alerts"]
    assert [a for a in alerts if a["state"] == "firing"] == []
    # The test's own records moved the lag a moment ago (a grant, a dead letter): the lag-growth rule may have
    # begun its 15 minutes pending on that; it cannot fire here, and no other rule may be pending at all.
    assert [a for a in alerts if a["labels"]["alertname"] != "PermwatchConsumerLagGrowing"] == []

    subprocess.run(["setfacl", "-x", f"g:{STAFF}", str(folder)], check=True)
    wait_until(
        lambda: (
            values(prometheus.query('permwatch_exposures_open{label="ledning"}')) == [0.0]
            and not prometheus.query("permwatch_exposure_oldest_age_seconds")
        ),
        "the closed exposure to leave the gauges",
    )


def test_latency_histogram_agrees_with_the_exposure_events(pipeline: Pipeline, prometheus: PrometheusServer) -> None:
    """The histogram's sum is the sum of detected_at - observed_at over the exposure events on Kafka.

    Every role exports the (unlabelled) histogram; only the processor's moves, hence the sums.
    """
    pipeline.wait_quiet()
    wait_until(
        lambda: (
            values(prometheus.query("sum(permwatch_detection_latency_seconds_count)")) == [len(pipeline.exposures())]
        ),
        "Prometheus and the exposures topic to agree on the number of exposure events",
    )
    events = pipeline.exposures()
    assert len(events) >= 2  # opened and closed by the test above
    expected = sum(
        max(0.0, (datetime.fromisoformat(e["detected_at"]) - datetime.fromisoformat(e["observed_at"])).total_seconds())
        for e in events
    )
    (total,) = values(prometheus.query("sum(permwatch_detection_latency_seconds_sum)"))
    assert math.isclose(total, expected, rel_tol=1e-6, abs_tol=1e-6)
