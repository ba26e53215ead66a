"""Collector plumbing: the emitter that puts collector events on the bus, counting what it publishes."""

from __future__ import annotations

from prometheus_client import Counter

from permwatch.events import Event, encode
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus


class BusEmitter:
    """Publishes events keyed by the event itself (path, principal), so one key's order holds.

    Shared by every collector of a process; each event is counted under its own
    ``source`` (the collector's id), topic and type.
    """

    def __init__(self, bus: Bus, metrics: Metrics | None = None) -> None:
        self.bus = bus
        self.published = 0
        self._metrics = metrics
        self._counters: dict[tuple[str, str, str], Counter] = {}

    def emit(self, event: Event) -> None:
        self.bus.publish(event.topic, event.key, encode(event))
        self.published += 1
        if self._metrics is not None:
            self._counter(self._metrics, event).inc()

    def flush(self) -> None:
        self.bus.flush()

    def _counter(self, metrics: Metrics, event: Event) -> Counter:
        event_type = getattr(event, "type", type(event).__name__)  # every concrete event declares its ``type``
        key = (event.source, event.topic, event_type)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.collector_events_published.labels(
                collector=event.source, topic=event.topic, type=event_type
            )
        return counter
