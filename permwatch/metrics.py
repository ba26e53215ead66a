"""Prometheus metrics for every role: one :class:`Metrics` object built from a registry passed in.

``Metrics.create(registry)`` registers everything permwatch exports, whatever
the role, so tests use a registry of their own and the dashboard and the alert
rules can be checked against exactly these names. Stages are handed the object
and touch only their own metrics; a process that does not run a stage exports
that stage's labelled metrics without series and its unlabelled ones (the
latency histogram) at zero. Names follow Prometheus conventions:
``permwatch_<thing>_<unit>``, ``_total`` for counters, ``_seconds`` for
durations. Open exposures and consumer lag are computed at scrape time
(:mod:`permwatch.metrics_scrape`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from permwatch.metrics_scrape import ConsumerLag, OpenExposures

# Change observed → exposure emitted. The target is well under a second, so the
# buckets are fine between 5 and 500 ms (steps of 25-50 %) and coarse beyond.
DETECTION_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.06,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass(frozen=True)
class Metrics:
    """Every metric permwatch exports, registered on ``registry``; see each help text."""

    registry: CollectorRegistry
    role_info: Gauge
    collector_events_read: Counter
    collector_events_published: Counter
    fs_scans: Counter
    fs_scan_paths: Gauge
    fs_scan_in_progress: Gauge
    fs_baseline_completed: Gauge
    fs_last_scan_duration: Gauge
    fs_watch_troubles: Counter
    fs_unreadable_paths: Counter
    fs_acl_unreadable: Counter
    spool_records: Gauge
    spool_bytes: Gauge
    spool_spooling: Gauge
    spool_dropped: Counter
    spool_drained: Counter
    directory_sync_ok: Gauge
    directory_last_sync: Gauge
    directory_sync_errors: Counter
    directory_principals: Gauge
    processor_events_handled: Counter
    processor_exposure_events: Counter
    processor_restart_seconds: Gauge
    processor_restart_replayed: Gauge
    processor_checkpoint_seconds: Gauge
    processor_checkpoint_bytes: Gauge
    detection_latency: Histogram
    dead_letters: Counter
    alerts_delivered: Counter
    alerts_failed: Counter
    sink_retries: Counter
    open_exposures: OpenExposures
    consumer_lag: ConsumerLag

    @classmethod
    def create(cls, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time) -> Metrics:
        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=registry)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(name, doc, list(labels), registry=registry)

        open_exposures = OpenExposures(clock)
        consumer_lag = ConsumerLag()
        registry.register(open_exposures)
        registry.register(consumer_lag)
        return cls(
            registry=registry,
            role_info=gauge("permwatch_role_info", "1 for each role this process runs.", ["role"]),
            collector_events_read=counter(
                "permwatch_collector_events_read_total",
                "Notifications a collector read from its source (fs: inotify events by type).",
                ["collector", "type"],
            ),
            collector_events_published=counter(
                "permwatch_collector_events_published_total",
                "Events a collector published to the bus, by topic and event type.",
                ["collector", "topic", "type"],
            ),
            fs_scans=counter(
                "permwatch_fs_scans_total",
                "Completed filesystem scans by reason (baseline, overflow rescan, ...).",
                ["collector", "reason"],
            ),
            fs_scan_paths=gauge(
                "permwatch_fs_scan_paths",
                "Paths the running scan of a root has visited so far (the last scan's total once it ends).",
                ["collector", "root"],
            ),
            fs_scan_in_progress=gauge(
                "permwatch_fs_scan_in_progress", "1 while a scan of the root runs.", ["collector", "root"]
            ),
            fs_baseline_completed=gauge(
                "permwatch_fs_baseline_completed",
                "1 once the baseline scan of the root has completed in this process.",
                ["collector", "root"],
            ),
            fs_last_scan_duration=gauge(
                "permwatch_fs_last_scan_duration_seconds",
                "How long the last completed scan of the root took.",
                ["collector", "root"],
            ),
            fs_watch_troubles=counter(
                "permwatch_fs_watch_troubles_total",
                "inotify lost events (overflow) or could not add a watch (watch_limit); each leads to a rescan.",
                ["collector", "kind"],
            ),
            fs_unreadable_paths=counter(
                "permwatch_fs_unreadable_paths_total",
                "Paths whose permissions or listing could not be read (what was published is kept).",
                ["collector"],
            ),
            fs_acl_unreadable=counter(
                "permwatch_fs_acl_unreadable_total",
                "Reads of a path whose NT ACL (security.NTACL) did not decode: published as 'ACL unreadable'.",
                ["collector"],
            ),
            spool_records=gauge(
                "permwatch_spool_records", "Events a collector process holds in its spool while Kafka is unreachable."
            ),
            spool_bytes=gauge("permwatch_spool_bytes", "Size of the spool's files on disk."),
            spool_spooling=gauge(
                "permwatch_spool_spooling", "1 while the collectors' events go to the spool instead of Kafka."
            ),
            spool_dropped=counter(
                "permwatch_spool_dropped_total",
                "Events the spool could not keep: full (a rescan follows), rejected by Kafka for good, or corrupt.",
                ["reason"],
            ),
            spool_drained=counter("permwatch_spool_drained_total", "Spooled events delivered to Kafka."),
            directory_sync_ok=gauge(
                "permwatch_directory_sync_ok",
                "1 if the directory source's last sync succeeded, 0 if it failed (the last good state stays).",
                ["source"],
            ),
            directory_last_sync=gauge(
                "permwatch_directory_last_sync_timestamp_seconds",
                "Unix time of the directory source's last successful sync.",
                ["source"],
            ),
            directory_sync_errors=counter(
                "permwatch_directory_sync_errors_total", "Failed directory syncs.", ["source"]
            ),
            directory_principals=gauge(
                "permwatch_directory_principals",
                "Users and groups the directory source knows after its last successful sync.",
                ["source", "kind"],
            ),
            processor_events_handled=counter(
                "permwatch_processor_events_handled_total",
                "Input events the processor applied (replayed ones included), by topic and event type.",
                ["topic", "type"],
            ),
            processor_exposure_events=counter(
                "permwatch_processor_exposure_events_total",
                "Exposure events the processor published, by status and kind (contents: a file readable; "
                "names: a folder listable, no file readable).",
                ["status", "kind"],
            ),
            processor_restart_seconds=gauge(
                "permwatch_processor_restart_seconds",
                "From the processor's start to its state being rebuilt (checkpoint loaded, history up to the commit "
                "replayed).",
            ),
            processor_restart_replayed=gauge(
                "permwatch_processor_restart_replayed_records",
                "Records the processor replayed at its last start (after the checkpoint, if one was used).",
            ),
            processor_checkpoint_seconds=gauge(
                "permwatch_processor_checkpoint_seconds",
                "How long the last state checkpoint held up the processor (taking the snapshot; writing is apart).",
            ),
            processor_checkpoint_bytes=gauge(
                "permwatch_processor_checkpoint_bytes", "Size of the last state checkpoint the processor wrote."
            ),
            detection_latency=Histogram(
                "permwatch_detection_latency_seconds",
                "From the change being observed (the cause's time) to the exposure event (detected_at - observed_at).",
                buckets=DETECTION_LATENCY_BUCKETS,
                registry=registry,
            ),
            dead_letters=counter(
                "permwatch_dead_letters_total",
                "Records sent to the deadletter topic, by stage and reason class.",
                ["stage", "reason"],
            ),
            alerts_delivered=counter("permwatch_alerts_delivered_total", "Exposure events a sink accepted.", ["sink"]),
            alerts_failed=counter(
                "permwatch_alerts_failed_total",
                "Exposure events a sink refused for good (dead-lettered).",
                ["sink"],
            ),
            sink_retries=counter(
                "permwatch_sink_retries_total", "Sends retried after a retryable sink error.", ["sink"]
            ),
            open_exposures=open_exposures,
            consumer_lag=consumer_lag,
        )

    # ---------------------------------------------------------------- directory

    def directory_synced(self, source: str, *, users: int, groups: int, at: float) -> None:
        """A directory source (file or LDAP) finished a sync; ``at`` is Unix time."""
        self.directory_sync_ok.labels(source=source).set(1)
        self.directory_last_sync.labels(source=source).set(at)
        self.directory_principals.labels(source=source, kind="user").set(users)
        self.directory_principals.labels(source=source, kind="group").set(groups)
        self.directory_sync_errors.labels(source=source)  # exported as 0 before the first failure

    def directory_sync_failed(self, source: str) -> None:
        self.directory_sync_ok.labels(source=source).set(0)
        self.directory_sync_errors.labels(source=source).inc()

    # ------------------------------------------------------------------- alerts

    def known_sinks(self, names: Iterable[str]) -> None:
        """Export the alert counters of every configured sink from the start, at 0."""
        for name in names:
            self.alerts_delivered.labels(sink=name)
            self.alerts_failed.labels(sink=name)
            self.sink_retries.labels(sink=name)

    def sink_delivered(self, sink: str, events: int) -> None:
        self.alerts_delivered.labels(sink=sink).inc(events)

    def sink_failed(self, sink: str, events: int) -> None:
        self.alerts_failed.labels(sink=sink).inc(events)

    def sink_retried(self, sink: str) -> None:
        self.sink_retries.labels(sink=sink).inc()

    def close(self) -> None:
        """Release what scrape-time metrics hold (the lag probes' bus clients)."""
        self.consumer_lag.close()
