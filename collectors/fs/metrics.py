"""The filesystem collector's metrics: its own series of the shared :class:`permwatch.metrics.Metrics`.

Labels are bound once per collector (and per root or event type on first use),
so the collector's hot paths pay for an increment, not a label lookup. Without
a metrics object every call does nothing, which keeps the collector usable on
its own (tests, one-off scans).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from collectors.metrics import CollectorMetrics
from permwatch.metrics import Metrics


@dataclass(slots=True)
class FsCollectorStats:
    """Counters a runner can export as metrics, kept whether or not a metrics registry is given."""

    events_emitted: int = 0
    scans: int = 0
    overflows: int = 0
    watch_limit_hits: int = 0
    unreadable_paths: int = 0
    coalesced_reads: int = 0
    """Bursts' backlogs of changed paths read together (collectors.fs.coalesce)."""


class FsCollectorMetrics:
    """What one filesystem collector reports: inotify events read, watch trouble, scans and their progress."""

    def __init__(self, metrics: Metrics | None, collector: str) -> None:
        self._metrics = None if metrics is None else metrics.part(CollectorMetrics)
        self._collector = collector
        self._read: dict[str, Counter] = {}
        own = self._metrics
        self._unreadable = None if own is None else own.fs_unreadable_paths.labels(collector=collector)
        if own is not None:  # series that exist at 0 before the first trouble: rates and alerts need them
            for kind in ("overflow", "watch_limit"):
                own.fs_watch_troubles.labels(collector=collector, kind=kind)
            for reason in ("baseline", "overflow"):
                own.fs_scans.labels(collector=collector, reason=reason)

    def event_read(self, event_type: str) -> None:
        """One inotify notification taken from the queue (watchdog's type: attrib, created, deleted, moved)."""
        if self._metrics is None:
            return
        counter = self._read.get(event_type)
        if counter is None:
            counter = self._read[event_type] = self._metrics.collector_events_read.labels(
                collector=self._collector, type=event_type
            )
        counter.inc()

    def watch_trouble(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.fs_watch_troubles.labels(collector=self._collector, kind=kind).inc()

    def unreadable(self) -> None:
        if self._unreadable is not None:
            self._unreadable.inc()

    def acl_unreadable(self) -> None:
        """A path read whose NT ACL did not decode (published as "ACL unreadable", not skipped)."""
        if self._metrics is not None:
            self._metrics.fs_acl_unreadable.labels(collector=self._collector).inc()

    def scan_started(self, root: str) -> Gauge | None:
        """Mark the scan running; returns the gauge the walk keeps at the number of paths seen so far."""
        if self._metrics is None:
            return None
        self._metrics.fs_scan_in_progress.labels(collector=self._collector, root=root).set(1)
        self._metrics.fs_baseline_completed.labels(collector=self._collector, root=root)  # 0 until it has
        progress = self._metrics.fs_scan_paths.labels(collector=self._collector, root=root)
        progress.set(0)
        return progress

    def scan_ended(self, root: str) -> None:
        """The scan of ``root`` stopped, completed or not."""
        if self._metrics is not None:
            self._metrics.fs_scan_in_progress.labels(collector=self._collector, root=root).set(0)

    def scan_completed(self, root: str, reason: str, *, paths_seen: int, seconds: float) -> None:
        if self._metrics is None:
            return
        self._metrics.fs_scans.labels(collector=self._collector, reason=reason).inc()
        self._metrics.fs_scan_paths.labels(collector=self._collector, root=root).set(paths_seen)
        self._metrics.fs_last_scan_duration.labels(collector=self._collector, root=root).set(seconds)
        if reason == "baseline":
            self._metrics.fs_baseline_completed.labels(collector=self._collector, root=root).set(1)
