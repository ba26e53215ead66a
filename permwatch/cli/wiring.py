"""Wiring: build each role's stage from the config and run them until told to stop.

This is the only module that imports the stages (collectors, processor,
alerts); they never import each other and meet only on the bus. ``all``
runs every role in one process as threads sharing one bus; the separate
roles run one stage each, for deployments over Kafka. Each process has one
:class:`permwatch.metrics.Metrics`, handed to the stages it runs and served at
``/metrics`` when ``[metrics] listen`` is set.
"""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from permwatch.cli.stopping import StopRequest
from permwatch.config import Config, ConfigError
from permwatch.events import INPUT_TOPICS, TOPIC_EXPOSURES
from permwatch.metrics import Metrics
from permwatch.metrics_http import MetricsServer, serve_metrics
from permwatch.metrics_scrape import LagProbe, LagProbing
from permwatch.transport import open_bus
from permwatch.transport.base import Bus, EventLogError, LogExtent

if TYPE_CHECKING:
    from processor.checkpoint import Checkpoints

log = logging.getLogger("permwatch")


def validate_stages(config: Config, path: Path) -> None:
    """Check what only the stages know (sink kinds and settings, label names); raise :class:`ConfigError`."""
    from alerts.registry import SINKS, build_sink

    problems = []
    for i, sink in enumerate(config.alerts.sinks):
        key = f"alerts.sinks.{i}"
        if sink.kind not in SINKS:
            problems.append(f"{path}: key '{key}.kind': unknown sink {sink.kind!r} (known: {', '.join(sorted(SINKS))})")
            continue
        try:
            build_sink(sink.model_dump(exclude_none=True))
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                loc = ".".join(str(p) for p in err["loc"]) or _key_named_in(sink.model_dump(), err["msg"])
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append(f"{path}: key '{key}.{loc}': {msg}" if loc else f"{path}: key '{key}': {msg}")
    from collectors.registry import collector_problems

    problems += collector_problems(config, path)  # what only a collector knows of its table ([[fs]] actors, #18)
    if problems:
        raise ConfigError("\n".join(problems))


def _key_named_in(settings: Mapping[str, Any], message: str) -> str:
    """The key a sink's whole-table error is about (it carries no field): the ``*_file`` or ``*_env`` setting
    whose file or variable the message names, e.g. the e-mail sink's unreadable ``password_file``; else ''."""
    for name, value in settings.items():
        if name.endswith(("_file", "_env")) and value is not None and str(value) in message:
            return name
    return ""


def check_sources(config: Config) -> int:
    """``check-config --connect``: one line per ``[[ldap]]`` source on stdout; 1 when any failed, else 0."""
    from collectors.ldap_check import check_source

    sources = config.stage_settings("ldap")
    if not sources:
        print("no [[ldap]] sources to connect to")
        return 0
    failed = False
    for ldap_config in sources:
        result = check_source(ldap_config)
        print(result.summary, flush=True)
        failed = failed or not result.ok
    return 1 if failed else 0


def _disk_full(exc: BaseException) -> bool:
    """A write that found its filesystem full, as SQLite or the OS says it."""
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def process_metrics(registry: CollectorRegistry, *, clock: Callable[[], float] = time.time) -> Metrics:
    """A process's metrics: the core's and every stage's, whichever roles it runs (a stage it does not run
    exports its labelled series empty and the others at zero, so dashboards and rules find every name)."""
    from alerts.metrics import AlertMetrics
    from collectors.metrics import CollectorMetrics
    from processor.metrics import ProcessorMetrics

    return Metrics.create(registry, clock=clock, parts=(CollectorMetrics, ProcessorMetrics, AlertMetrics))


@dataclass
class Running:
    """The stages of one process, their threads and the shared stop flag."""

    bus: Bus
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    stages: dict[str, Any] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=lambda: process_metrics(CollectorRegistry()))
    metrics_server: MetricsServer | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    """Run after the stages' threads stopped, before the bus closes (the collectors' spool)."""
    failed: list[str] = field(default_factory=list)
    """The stages that stopped by an error (each stops the others)."""
    state_dir: Path | None = None
    """Where the stages keep their state, named when a full disk stops one."""

    def start(self, name: str, stage: Any) -> None:
        self.stages[name] = stage

        def target() -> None:
            try:
                stage.run(self.stop)
            except EventLogError as exc:
                self.fail(name, str(exc))
            except Exception as exc:
                if not _disk_full(exc):
                    log.exception("%s stopped by an error", name)
                    self.failed.append(name)
                    self.stop.set()
                else:  # its own state (the fs collector's, the alerts' delivery log) ran out of room
                    self.fail(name, f"no room to write its state under {self.state_dir}: {exc}")

        thread = threading.Thread(target=target, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def fail(self, name: str, why: str) -> None:
        """``name`` met an event log (or state) it cannot use: one line (the file, the cause, the way out) and
        everything stops."""
        if name not in self.failed:  # (the metrics scrape meets it again until the process is down)
            log.error("%s stopped: %s", name, why)
            self.failed.append(name)
        self.stop.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
        for close in self.closers:
            close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.metrics.close()
        try:
            self.bus.close()
        except EventLogError as exc:  # (a full disk: what was queued at the stop is not stored)
            log.error("event log not closed cleanly: %s", exc)

    def watch_lag(self, topics: Sequence[str], group: str) -> None:
        """Export ``group``'s consumer lag, when the bus can tell it."""
        if isinstance(self.bus, LagProbing):
            self.metrics.consumer_lag.watch(_StoppingProbe(self.bus.lag_probe(topics, group), self))


class _StoppingProbe:
    """A lag probe that stops the process when it finds the event log unusable (damaged since the start), rather
    than have ``/metrics`` answer 500 while the stages run on."""

    def __init__(self, probe: LagProbe, running: Running) -> None:
        self._probe = probe
        self._running = running

    @property
    def group(self) -> str:
        return self._probe.group

    def lag(self) -> Mapping[tuple[str, int], int] | None:
        try:
            return self._probe.lag()
        except EventLogError as exc:
            self._running.fail("metrics", str(exc))
            return None

    def close(self) -> None:
        self._probe.close()


def processor_checkpoints(config: Config, metrics: Metrics | None = None, bus: Bus | None = None) -> Checkpoints | None:
    """The processor's checkpoint store, unless ``processor.checkpoint`` is off.

    Its identity is what the checkpoint's offsets mean: the consumer group and
    the topics (Kafka's topic prefix, whichever client, or the embedded log's file),
    and for processors sharing the work, which one: each keeps its own. With
    ``bus``, a checkpoint must also fit its log as it is now (emptied, replaced,
    older: see :mod:`processor.log_fit`).
    """
    from processor.checkpoint import Checkpoints
    from processor.partitioned import instance_of

    settings = config.processor
    if not settings.checkpoint:
        return None
    transport = config.transport
    if transport.kind in ("kafka", "confluent") and transport.kafka is not None:
        topics = f"kafka {transport.kafka.topic_prefix}"
    else:
        topics = f"embedded {transport.embedded.path.resolve()}"
    identity = {"group": settings.group, "topics": topics}
    name = settings.group
    if settings.partitioned:
        identity["instance"] = instance_of(settings)
        name = f"{settings.group}-{identity['instance']}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    path = settings.checkpoint_path or config.state_dir / f"processor-{safe}.checkpoint"
    log_extent = bus if isinstance(bus, LogExtent) else None
    return Checkpoints(
        path, identity, interval_seconds=settings.checkpoint_interval_seconds, metrics=metrics, log=log_extent
    )


def start_roles(
    config: Config, role: str = "all", *, bus: Bus | None = None, stop: threading.Event | None = None
) -> Running:
    """Open the bus and start ``role``'s stages; once ``stop`` is set (a signal during start-up), no more."""
    running = Running(bus or open_bus(config.transport), stop=stop or threading.Event(), state_dir=config.state_dir)
    metrics = running.metrics
    state_dir = config.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    if role in ("all", "collector"):
        from collectors.registry import start_collectors

        start_collectors(config, running.bus, metrics, running.start, running.closers)
    if role in ("all", "processor") and not running.stop.is_set():
        from processor.runner import ProcessorRunner

        severities = {name: label.severity.value for name, label in config.labels.definitions.items()}
        metrics.open_exposures.know_labels(severities)
        running.watch_lag(INPUT_TOPICS, config.processor.group)
        kind: type[ProcessorRunner] = ProcessorRunner
        if config.processor.partitioned:  # one of several sharing the fs partitions
            from processor.partitioned import PartitionedProcessor

            kind = PartitionedProcessor
        checkpoints = processor_checkpoints(config, metrics, running.bus)
        runner = kind(running.bus, config.processor, metrics=metrics, checkpoints=checkpoints)
        if checkpoints is not None and not config.processor.partitioned:  # issue 13: a log that loses its record
            from processor.ledger import PublishedLedger

            runner.ledger = PublishedLedger(checkpoints.path.with_suffix(".published.db"))
        running.start("processor", runner)
    if role in ("all", "alerts") and not running.stop.is_set():
        from alerts.base import SinkContext
        from alerts.dispatch import DeliveryLog, Dispatcher
        from alerts.grouping import GroupingPolicy
        from alerts.metrics import AlertMetrics
        from alerts.registry import build_sink

        alerts = config.alerts
        delivery_log = DeliveryLog(state_dir / "alerts-delivered.db")
        context = SinkContext(database=delivery_log.database)
        defaults = {"hide_below_label": alerts.hide_below_label}
        sinks = [build_sink({**defaults, **s.model_dump(exclude_none=True)}, context) for s in alerts.sinks]
        grouping = GroupingPolicy(
            window_seconds=alerts.group_window_seconds, actor_window_seconds=alerts.group_actor_window_seconds
        )
        dispatcher = Dispatcher(
            running.bus, sinks, delivery_log, group=alerts.group, grouping=grouping, metrics=metrics
        )
        metrics.part(AlertMetrics).known_sinks(sink.name for sink in sinks)
        running.watch_lag([TOPIC_EXPOSURES], alerts.group)
        running.start("alerts", dispatcher)
        from alerts.slack_interactions import endpoints_for  # respond (issue 19): Slack's button clicks

        try:
            endpoints = endpoints_for(sinks, running.bus)
        except ConfigError:
            running.shutdown()
            raise
        for i, endpoint in enumerate(endpoints):
            running.start(f"slack-interactions:{i}", endpoint)
    for each in ("collector", "processor", "alerts") if role == "all" else (role,):
        metrics.role_info.labels(role=each).set(1)
    try:
        running.metrics_server = serve_metrics(config.metrics, metrics.registry)
    except ConfigError:
        running.shutdown()
        raise
    return running


def run_roles(
    config: Config, role: str, *, until: Callable[[], bool] | None = None, stop: StopRequest | None = None
) -> int:
    """Run ``role`` until ``stop`` (installed by the CLI before anything else) or a stage's failure."""
    own = stop is None
    request = stop or StopRequest()
    if own:
        request.install()
    # the first line of every start, before any stage logs (a log read start by start splits here)
    log.info("permwatch starting (role %s, transport %s)", role, config.transport.kind)
    try:
        if request.event.is_set():
            log.info("stopping (%s) before the stages started", request.signal_name)
            return 0
        running = start_roles(config, role, stop=request.event)
        if request.event.is_set():
            log.info("stopping (%s) during start-up", request.signal_name)
        else:
            log.info("permwatch running (role %s, transport %s)", role, config.transport.kind)
        try:
            while not running.stop.wait(0.5):
                if until is not None and until():
                    break
                if not all(t.is_alive() for t in running.threads):
                    log.error("a stage stopped; shutting down")
                    return 1
            if request.signal_name is not None and not running.failed:
                log.info("stopping (%s)", request.signal_name)
        finally:
            running.shutdown()
    finally:
        if own:
            request.restore()
    if running.failed:  # the failing stage set the stop flag: a failure, not a requested stop
        log.error("stopped because %s failed", ", ".join(running.failed))
        return 1
    if request.signal_name is not None:
        log.info("stopped (%s)", request.signal_name)
    return 0
