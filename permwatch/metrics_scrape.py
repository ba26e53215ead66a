"""Metrics computed when Prometheus scrapes: open exposures with their ages, and consumer lag.

Both are cheaper to compute on demand than to keep current. Open exposures are
a small lock-protected book the processor updates after each batch; a scrape
copies it and computes ages against the clock of that moment, so an exposure
keeps ageing while nothing happens. Consumer lag is asked of the bus through a
probe with a client of its own, on the scraping thread: the stage's consumer is
never touched from another thread, and a stalled stage (an alert sink being
retried, say) still shows its lag growing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from prometheus_client.core import GaugeMetricFamily, Metric

from permwatch.events import ExposureStatus

OPEN_EXPOSURES = "permwatch_exposures_open"
OLDEST_EXPOSURE_AGE = "permwatch_exposure_oldest_age_seconds"
CONSUMER_LAG = "permwatch_consumer_lag_records"


@dataclass(frozen=True, slots=True)
class _OpenExposure:
    label: str
    severity: str
    opened_at: float


class OpenExposures:
    """The open exposures one processor knows, exported per label and severity: how many, and the oldest's age.

    Labels named in :meth:`know_labels` export a count of 0 while nothing is open,
    so a dashboard shows "none open" rather than "no data"; the age is exported
    only while something is open.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, _OpenExposure] = {}
        self._known: dict[str, str] = {}

    def know_labels(self, severities: Mapping[str, str]) -> None:
        """Label name → severity of the labels the configuration defines."""
        with self._lock:
            self._known.update(severities)

    def record(self, exposure_id: str, status: ExposureStatus, label: str, severity: str, opened_at: datetime) -> None:
        """Note one exposure transition (opened, changed or closed), replayed ones included."""
        with self._lock:
            if status is ExposureStatus.CLOSED:
                self._open.pop(exposure_id, None)
            else:
                self._open[exposure_id] = _OpenExposure(label, severity, opened_at.timestamp())

    def replace(self, entries: Iterable[tuple[str, str, str, datetime]]) -> None:
        """Make the book exactly ``entries`` (exposure id, label, severity, opened at): what a processor's state
        holds open after it was loaded or rebuilt, or after it handed folders to another processor."""
        with self._lock:
            self._open = {
                exposure_id: _OpenExposure(label, severity, opened_at.timestamp())
                for exposure_id, label, severity, opened_at in entries
            }

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            entries = list(self._open.values())
            known = dict(self._known)
        now = self._clock()
        counts = {(label, severity): 0 for label, severity in known.items()}
        oldest: dict[tuple[str, str], float] = {}
        for entry in entries:
            key = (entry.label, entry.severity)
            counts[key] = counts.get(key, 0) + 1
            oldest[key] = max(oldest.get(key, 0.0), now - entry.opened_at, 0.0)
        open_family, age_family = self._families()
        for (label, severity), count in sorted(counts.items()):
            open_family.add_metric([label, severity], count)
        for (label, severity), age in sorted(oldest.items()):
            age_family.add_metric([label, severity], age)
        return [open_family, age_family]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                OPEN_EXPOSURES,
                "Exposures currently open, by sensitivity label and severity.",
                labels=["label", "severity"],
            ),
            GaugeMetricFamily(
                OLDEST_EXPOSURE_AGE,
                "Seconds since the oldest open exposure of a label was opened (its first cause observed).",
                labels=["label", "severity"],
            ),
        ]


class LagProbe(Protocol):
    """How far one consumer group is behind, per partition of its topics."""

    @property
    def group(self) -> str: ...

    def lag(self) -> Mapping[tuple[str, int], int] | None:
        """(logical topic, partition) → records not yet committed by the group; None when the bus cannot say."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LagProbing(Protocol):
    """A bus that can report a consumer group's lag (both transports can)."""

    def lag_probe(self, topics: Sequence[str], group: str) -> LagProbe: ...


class ConsumerLag:
    """Exports the lag of every watched consumer group, asked of the bus at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probes: list[LagProbe] = []

    def watch(self, probe: LagProbe) -> None:
        with self._lock:
            self._probes.append(probe)

    def close(self) -> None:
        with self._lock:
            probes, self._probes = self._probes, []
        for probe in probes:
            probe.close()

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        with self._lock:  # a probe's client is used by one thread at a time
            for probe in self._probes:
                lag = probe.lag()
                for (topic, partition), records in sorted((lag or {}).items()):
                    family.add_metric([probe.group, topic, str(partition)], records)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            CONSUMER_LAG,
            "Records on a partition the consumer group has not committed yet (log end offset - committed offset).",
            labels=["group", "topic", "partition"],
        )
