"""Collector plumbing: the emitter that puts collector events on the bus."""

from __future__ import annotations

from permwatch.events import Event, encode
from permwatch.transport.base import Bus


class BusEmitter:
    """Publishes events keyed by the event itself (path, principal), so one key's order holds."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.published = 0

    def emit(self, event: Event) -> None:
        self.bus.publish(event.topic, event.key, encode(event))
        self.published += 1

    def flush(self) -> None:
        self.bus.flush()
