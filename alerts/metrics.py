"""The alerts' metrics: exposure events each sink accepted, refused for good, or retried.

Declared here, by the stage that owns them; registered on a process's registry
as a part of its :class:`permwatch.metrics.Metrics` (``metrics.part(AlertMetrics)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry, Counter

from permwatch.metrics import counter as new_counter


@dataclass(frozen=True)
class AlertMetrics:
    """Each sink's series; see each help text."""

    alerts_delivered: Counter
    alerts_failed: Counter
    sink_retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AlertMetrics:
        counter = partial(new_counter, registry)
        return cls(
            alerts_delivered=counter("permwatch_alerts_delivered_total", "Exposure events a sink accepted.", ["sink"]),
            alerts_failed=counter(
                "permwatch_alerts_failed_total",
                "Exposure events a sink refused for good (dead-lettered).",
                ["sink"],
            ),
            sink_retries=counter(
                "permwatch_sink_retries_total", "Sends retried after a retryable sink error.", ["sink"]
            ),
        )

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
