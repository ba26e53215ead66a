"""Metrics: names and conventions, what each stage counts, scrape-time exposures and lag, the HTTP endpoint."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerts.metrics import AlertMetrics
from collectors.directory_file import DirectoryFileCollector
from collectors.directory_settings import DirectoryFileConfig
from collectors.fs import FsCollector
from collectors.fs.settings import FsCollectorConfig
from collectors.runner import BusEmitter
from permwatch.cli.wiring import process_metrics, start_roles
from permwatch.config import (
    Config,
    ConfigError,
    EmbeddedConfig,
    LabelDefinition,
    LabelsConfig,
    MetricsConfig,
    ProcessorConfig,
    TransportConfig,
)
from permwatch.deadletter import reason_class
from permwatch.events import (
    INPUT_TOPICS,
    TOPIC_FS,
    DirectoryGroup,
    DirectoryUser,
    Event,
    ExposureStatus,
    Label,
    LabelAssigned,
    Severity,
    encode,
)
from permwatch.metrics import Metrics
from permwatch.metrics_http import serve_metrics
from permwatch.transport.embedded import EmbeddedBus
from processor.runner import ProcessorRunner
from tests.deploy_exprs import exported_names
from tests.unit.test_engine import ALLA, LABEL, MGMT, ROOT, T0, fs


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_names_follow_prometheus_conventions() -> None:
    registry = CollectorRegistry()
    process_metrics(registry)
    families = list(registry.collect())
    assert len(families) >= 20
    for family in families:
        assert family.name.startswith("permwatch_"), family.name
        assert family.documentation, family.name
        if family.type in ("counter", "histogram"):
            assert not family.name.endswith("_total")  # prometheus-client appends it to the samples
        if "duration" in family.name or "latency" in family.name or "age" in family.name:
            assert family.name.endswith("_seconds"), family.name
    names = exported_names(registry)
    assert "permwatch_detection_latency_seconds_bucket" in names
    assert all(n.endswith(("_total", "_created")) for n in names if "delivered" in n or "retries" in n)


def test_each_registry_is_independent() -> None:
    first, second = Metrics.create(CollectorRegistry()), Metrics.create(CollectorRegistry())
    first.part(AlertMetrics).sink_delivered("slack", 2)
    assert value(first, "permwatch_alerts_delivered_total", sink="slack") == 2
    assert value(second, "permwatch_alerts_delivered_total", sink="slack") is None


def test_known_sinks_export_zero_until_the_dispatcher_counts() -> None:
    metrics = Metrics.create(CollectorRegistry())
    alerts = metrics.part(AlertMetrics)
    alerts.known_sinks(["jsonl", "slack"])
    assert value(metrics, "permwatch_alerts_failed_total", sink="slack") == 0
    alerts.sink_failed("slack", 3)
    alerts.sink_retried("jsonl")
    assert value(metrics, "permwatch_alerts_failed_total", sink="slack") == 3
    assert value(metrics, "permwatch_sink_retries_total", sink="jsonl") == 1


def test_open_exposures_count_and_age_at_scrape_time() -> None:
    now = [T0.timestamp()]
    metrics = Metrics.create(CollectorRegistry(), clock=lambda: now[0])
    book = metrics.open_exposures
    book.know_labels({"ledning": "critical", "hr": "high"})
    book.record("e1", ExposureStatus.OPENED, "ledning", "critical", T0)
    book.record("e2", ExposureStatus.OPENED, "ledning", "critical", T0 + timedelta(seconds=30))
    book.record("e2", ExposureStatus.CHANGED, "ledning", "critical", T0 + timedelta(seconds=30))
    now[0] += 100
    assert value(metrics, "permwatch_exposures_open", label="ledning", severity="critical") == 2
    assert value(metrics, "permwatch_exposures_open", label="hr", severity="high") == 0
    assert value(metrics, "permwatch_exposure_oldest_age_seconds", label="ledning", severity="critical") == 100
    assert value(metrics, "permwatch_exposure_oldest_age_seconds", label="hr", severity="high") is None
    book.record("e1", ExposureStatus.CLOSED, "ledning", "critical", T0)
    now[0] += 10
    assert value(metrics, "permwatch_exposures_open", label="ledning", severity="critical") == 1
    assert value(metrics, "permwatch_exposure_oldest_age_seconds", label="ledning", severity="critical") == 80
    # a processor handing folders to another (or loading a checkpoint) sets the book to what it holds open now
    book.replace([("e3", "hr", "high", T0 + timedelta(seconds=60))])
    assert value(metrics, "permwatch_exposures_open", label="ledning", severity="critical") == 0
    assert value(metrics, "permwatch_exposures_open", label="hr", severity="high") == 1
    assert value(metrics, "permwatch_exposure_oldest_age_seconds", label="hr", severity="high") == 50


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("empty message (tombstone)", "tombstone"),
        ("message too large: 2000000 bytes > 1000000", "too_large"),
        ("unsupported schema_version (this build reads version 1)", "schema_version"),
        ("invalid <message>: Invalid JSON: expected value at line 1 column 2", "invalid"),
        ("a exposure event does not belong on topic fs", "wrong_topic"),
        ("sink slack: channel_not_found", "sink_refused"),
        ("something new", "other"),
    ],
)
def test_dead_letter_reasons_have_few_classes(reason: str, expected: str) -> None:
    assert reason_class(reason) == expected


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def publish(bus: EmbeddedBus, *events: Event) -> None:
    for event in events:
        bus.publish(event.topic, event.key, encode(event))
    bus.flush()


def drain(runner: ProcessorRunner, bus: EmbeddedBus) -> None:
    consumer = bus.consumer(INPUT_TOPICS, runner.config.group, replay_history=True)
    try:
        while records := consumer.poll(0.05, max_records=1000):
            runner.handle(records, consumer)
    finally:
        consumer.close()


def baseline_events() -> list[Event]:
    """A directory, a labelled folder only its group can read, and its parents."""
    return [
        DirectoryUser(name="anna", uid=1001, primary_gid=MGMT),
        DirectoryUser(name="bo", uid=1002, primary_gid=ALLA),
        DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",)),
        DirectoryGroup(name="alla", gid=ALLA, member_users=("bo",)),
        fs("/", mode=0o755, group=ROOT),
        fs("/srv", mode=0o755, group=ROOT),
        fs("/srv/share", mode=0o755, group=ROOT),
        fs("/srv/share/ledning", mode=0o750),
        LabelAssigned(path="/srv/share/ledning", label=LABEL),
    ]


def test_processor_counts_handled_events_latency_and_open_exposures(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    metrics = Metrics.create(CollectorRegistry())
    metrics.open_exposures.know_labels({"ledning": "high"})
    runner = ProcessorRunner(bus, ProcessorConfig(), metrics=metrics, clock=lambda: T0 + timedelta(milliseconds=40))
    publish(bus, *baseline_events())
    drain(runner, bus)
    assert value(metrics, "permwatch_exposures_open", label="ledning", severity="high") == 0
    handled = value(metrics, "permwatch_processor_events_handled_total", topic="fs", type="fs.permission")
    assert handled == 4
    publish(bus, fs("/srv/share/ledning", mode=0o755, at=T0))  # others can read now
    bus.publish(TOPIC_FS, "/x", b"{not json")
    bus.flush()
    drain(runner, bus)
    # a folder with no file in it, but r-x for others: they can enter it (ls -l), which is more than names
    assert value(metrics, "permwatch_processor_exposure_events_total", status="opened", kind="contents") == 1
    assert value(metrics, "permwatch_processor_exposure_events_total", status="opened", kind="names") == 0
    assert value(metrics, "permwatch_exposures_open", label="ledning", severity="high") == 1
    # detected_at - observed_at = 40 ms: counted in the 0.04 bucket, not in the 0.03 one
    assert value(metrics, "permwatch_detection_latency_seconds_bucket", le="0.04") == 1
    assert value(metrics, "permwatch_detection_latency_seconds_bucket", le="0.03") == 0
    assert value(metrics, "permwatch_dead_letters_total", stage="processor", reason="invalid") == 1
    assert value(metrics, "permwatch_dead_letters_total", stage="processor", reason="tombstone") == 0

    # a restarted processor rebuilds its state from history and knows the exposure is still open
    restarted = Metrics.create(CollectorRegistry())
    again = ProcessorRunner(bus, ProcessorConfig(), metrics=restarted)
    publish(bus, DirectoryGroup(name="enhet", gid=20003, member_users=("bo",)))
    drain(again, bus)
    assert value(restarted, "permwatch_exposures_open", label="ledning", severity="high") == 1
    assert (
        value(restarted, "permwatch_processor_exposure_events_total", status="opened", kind="contents") == 0
    )  # not re-emitted
    assert value(restarted, "permwatch_dead_letters_total", stage="processor", reason="invalid") == 0
    bus.close()


def test_bus_emitter_counts_per_collector_topic_and_type(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    metrics = Metrics.create(CollectorRegistry())
    emitter = BusEmitter(bus, metrics)
    emitter.emit(fs("/a", mode=0o755).model_copy(update={"source": "fs-1"}))
    emitter.emit(fs("/b", mode=0o755).model_copy(update={"source": "fs-1"}))
    emitter.emit(LabelAssigned(path="/a", label=Label(name="x"), source="fs-1"))
    emitter.flush()
    labels = {"collector": "fs-1", "topic": "fs", "type": "fs.permission"}
    assert value(metrics, "permwatch_collector_events_published_total", **labels) == 2
    labels = {"collector": "fs-1", "topic": "labels", "type": "label.assigned"}
    assert value(metrics, "permwatch_collector_events_published_total", **labels) == 1
    bus.close()


def test_directory_file_reports_sync_state(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        "users:\n  - {name: anna, uid: 1001, gid: 2001}\ngroups:\n  - {name: g, gid: 2001, members: [anna]}\n"
    )
    bus = EmbeddedBus(tmp_path / "log.db")
    metrics = Metrics.create(CollectorRegistry())
    collector = DirectoryFileCollector(
        DirectoryFileConfig(path=path, source="dir", watch=True), BusEmitter(bus, metrics), metrics=metrics
    )
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: value(metrics, "permwatch_directory_sync_ok", source="dir") == 1, "the first sync")
        assert value(metrics, "permwatch_directory_principals", source="dir", kind="user") == 1
        assert value(metrics, "permwatch_directory_sync_errors_total", source="dir") == 0
        path.write_text("users: [oops")
        wait_for(lambda: value(metrics, "permwatch_directory_sync_ok", source="dir") == 0, "the broken edit")
    finally:
        stop.set()
        thread.join()
    assert value(metrics, "permwatch_directory_sync_errors_total", source="dir") == 1
    bus.close()


def test_fs_scan_reports_progress_and_completion(tmp_path: Path) -> None:
    root = tmp_path / "share"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x")
    bus = EmbeddedBus(tmp_path / "log.db")
    metrics = Metrics.create(CollectorRegistry())
    config = FsCollectorConfig(collector_id="c1", roots=[root], watch=False)
    with FsCollector(config, BusEmitter(bus, metrics), state_path=tmp_path / "state.db", metrics=metrics) as fsc:
        completed = fsc.scan(root, "baseline")
    labels = {"collector": "c1", "root": str(root)}
    assert value(metrics, "permwatch_fs_scans_total", collector="c1", reason="baseline") == 1
    assert value(metrics, "permwatch_fs_scans_total", collector="c1", reason="overflow") == 0
    assert value(metrics, "permwatch_fs_baseline_completed", **labels) == 1
    assert value(metrics, "permwatch_fs_scan_in_progress", **labels) == 0
    assert value(metrics, "permwatch_fs_scan_paths", **labels) == completed.paths_seen
    assert value(metrics, "permwatch_fs_watch_troubles_total", collector="c1", kind="overflow") == 0
    scans = {"collector": "c1", "topic": "fs", "type": "fs.scan_completed"}
    assert value(metrics, "permwatch_collector_events_published_total", **scans) == 1
    bus.close()


def test_embedded_lag_counts_records_after_the_commit(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    metrics = Metrics.create(CollectorRegistry())
    metrics.consumer_lag.watch(bus.lag_probe(["fs", "labels"], "g"))
    for i in range(5):
        bus.publish("fs", f"/p{i}", b"{}")
    bus.publish("labels", "/p0", b"{}")
    bus.flush()
    assert value(metrics, "permwatch_consumer_lag_records", group="g", topic="fs", partition="0") == 5
    consumer = bus.consumer(["fs", "labels"], "g")
    consumer.poll(0, max_records=3)
    consumer.commit()
    consumer.close()
    assert value(metrics, "permwatch_consumer_lag_records", group="g", topic="fs", partition="0") == 2
    assert value(metrics, "permwatch_consumer_lag_records", group="g", topic="labels", partition="0") == 1
    metrics.close()
    bus.close()


@pytest.mark.parametrize(
    ("listen", "address"),
    [("", None), ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:0", ("::1", 0)), (":9464", ("0.0.0.0", 9464))],
)
def test_metrics_listen_setting(listen: str, address: tuple[str, int] | None) -> None:
    assert MetricsConfig(listen=listen).address == address


@pytest.mark.parametrize("listen", ["9464", "localhost", "host:99999", "host:http"])
def test_metrics_listen_setting_refuses(listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        MetricsConfig(listen=listen)


def test_metrics_endpoint_serves_and_stops() -> None:
    metrics = Metrics.create(CollectorRegistry())
    metrics.role_info.labels(role="processor").set(1)
    server = serve_metrics(MetricsConfig(listen="127.0.0.1:0"), metrics.registry)
    assert server is not None and server.port > 0
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            text = response.read().decode()
        assert 'permwatch_role_info{role="processor"} 1.0' in text
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            serve_metrics(MetricsConfig(listen=f"127.0.0.1:{server.port}"), metrics.registry)
    finally:
        server.close()
    assert serve_metrics(MetricsConfig(), metrics.registry) is None


def test_start_roles_serves_the_roles_metrics_until_shutdown(tmp_path: Path) -> None:
    config = Config(
        state_dir=tmp_path / "state",
        transport=TransportConfig(embedded=EmbeddedConfig(path=tmp_path / "log.db")),
        labels=LabelsConfig(definitions={"ledning": LabelDefinition(severity=Severity.CRITICAL)}),
        metrics=MetricsConfig(listen="127.0.0.1:0"),
    )
    running = start_roles(config, "processor")
    server = running.metrics_server
    try:
        assert server is not None
        with urllib.request.urlopen(server.url, timeout=5) as response:
            text = response.read().decode()
    finally:
        running.shutdown()
    assert 'permwatch_role_info{role="processor"} 1.0' in text
    assert 'permwatch_exposures_open{label="ledning",severity="critical"} 0.0' in text
    assert 'permwatch_consumer_lag_records{group="permwatch-processor",partition="0",topic="fs"} 0.0' in text
    assert "permwatch_collector_events_published_total{" not in text  # not a collector
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=5)
