"""The collectors' metrics: what they read and publish, the fs scans and watch trouble, the spool, directory syncs.

Declared here, by the stage that owns them; registered on a process's registry
as a part of its :class:`permwatch.metrics.Metrics` (``metrics.part(CollectorMetrics)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from permwatch.metrics import counter as new_counter
from permwatch.metrics import gauge as new_gauge


@dataclass(frozen=True)
class CollectorMetrics:
    """Every collector's series; see each help text."""

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

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CollectorMetrics:
        counter, gauge = partial(new_counter, registry), partial(new_gauge, registry)
        return cls(
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
            **_spool_metrics(counter, gauge),
            **_directory_metrics(counter, gauge),
        )

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


def _spool_metrics(counter: Callable[..., Counter], gauge: Callable[..., Gauge]) -> dict[str, Any]:
    return dict(
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
    )


def _directory_metrics(counter: Callable[..., Counter], gauge: Callable[..., Gauge]) -> dict[str, Any]:
    return dict(
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
        directory_sync_errors=counter("permwatch_directory_sync_errors_total", "Failed directory syncs.", ["source"]),
        directory_principals=gauge(
            "permwatch_directory_principals",
            "Users and groups the directory source knows after its last successful sync.",
            ["source", "kind"],
        ),
    )
