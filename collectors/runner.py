"""Collector plumbing: the emitter that puts collector events on the bus, counting what it publishes."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter

from collectors.metrics import CollectorMetrics
from collectors.spool import RecordDropped
from permwatch.events import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    TOPIC_FS,
    Event,
    FsPermissionEvent,
    encode,
)
from permwatch.keys import FsKeys, Keyed
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus
from permwatch.wire import encode_batch

log = logging.getLogger(__name__)


class BusEmitter:
    """Publishes events keyed so one key's order holds: filesystem events by their unit (see
    :mod:`permwatch.keys`; the watched roots and above go to every partition), others by the
    event's own key (principal, labelled folder).

    Shared by every collector of a process; each event is counted under its own
    ``source`` (the collector's id), topic and type. When the bus is the spool and
    it is full, ``emit`` raises :class:`RecordDropped`: the filesystem collector then
    keeps the batch out of its published state, the directory collectors go back to
    what they last published, so nothing dropped stays unpublished.

    With ``batch``, a unit's permission events wait for :meth:`flush` and go out as
    one ``fs.batch`` message (a lone event still goes out as itself): a burst over
    a tree costs a few hundred messages, not one per path, which the pure-Python
    Kafka client could not carry in real time. Each event is encoded once; the batch
    is assembled from those bytes. A batching emitter belongs to one collector.
    """

    def __init__(
        self,
        bus: Bus,
        metrics: Metrics | None = None,
        *,
        router: FsKeys | None = None,
        batch: bool = False,
    ) -> None:
        self.bus = bus
        self._batch = batch
        self._pending: dict[str, list[tuple[str, bytes]]] = {}
        """unit → (source, encoded permission event), oldest first"""
        self._pending_bytes: dict[str, int] = {}
        self.published = 0
        self._metrics = metrics
        self._router = router or FsKeys(())
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self.before_send: Callable[[], None] | None = None
        """Called before anything is handed to the bus (the filesystem collector's store makes its in-flight
        marks durable there, :mod:`collectors.fs.state`)."""

    def emit(self, event: Event) -> None:
        dropped: RecordDropped | None = None
        for routed in self._router.route(event):
            try:
                self._send(routed)
            except RecordDropped as exc:
                dropped = exc
        if dropped is not None:
            raise dropped

    def emit_wire(self, path: str, value: bytes, source: str) -> None:
        """A permission event the filesystem collector encoded itself (:mod:`collectors.fs.wire`)."""
        unit = self._router.unit_of(path)
        if unit is None:
            self._flush_pending()
            self._sending()
            self.bus.broadcast(TOPIC_FS, None, value)
            self._count_wire(source)
        elif self._batch:
            self._add_pending(unit, value, source)
        else:
            self._sending()
            self.bus.publish(TOPIC_FS, unit, value)
            self._count_wire(source)

    def flush(self) -> None:
        dropped: RecordDropped | None = None
        for unit in list(self._pending):
            try:
                self._publish_pending(unit)
            except RecordDropped as exc:
                dropped = exc
        self.bus.flush()
        if dropped is not None:
            raise dropped

    def _send(self, routed: Keyed) -> None:
        one = routed.event
        if self._batch and isinstance(one, FsPermissionEvent) and routed.key is not None and not routed.broadcast:
            self._add_pending(routed.key, encode(one), one.source)
            return
        if one.topic == TOPIC_FS:
            self._flush_pending()  # what came before a root's change (or a scan's end) goes out before it
        self._sending()
        if routed.broadcast:
            self.bus.broadcast(one.topic, routed.key, encode(one))
        else:
            self.bus.publish(one.topic, routed.key, encode(one))
        self._count(one.source, one.topic, getattr(one, "type", type(one).__name__))

    def _add_pending(self, unit: str, encoded: bytes, source: str) -> None:
        size = self._pending_bytes.get(unit, 0)
        if size + len(encoded) > MAX_MESSAGE_BYTES - 8192:
            self._publish_pending(unit)
            size = 0
        pending = self._pending.get(unit)
        if pending is None:
            pending = self._pending[unit] = []
        pending.append((source, encoded))
        self._pending_bytes[unit] = size + len(encoded) + 1
        if len(pending) >= MAX_BATCH:
            self._publish_pending(unit)

    def _flush_pending(self) -> None:
        for unit in list(self._pending):
            self._publish_pending(unit)

    def _publish_pending(self, unit: str) -> None:
        events = self._pending.pop(unit, [])
        self._pending_bytes.pop(unit, None)
        if not events:
            return
        if len(events) == 1:
            value = events[0][1]
        else:
            value = encode_batch(unit, events[0][0], [encoded for _, encoded in events])
        self._sending()
        self.bus.publish(TOPIC_FS, unit, value)
        for source, _ in events:
            self._count_wire(source)

    def _sending(self) -> None:
        if self.before_send is not None:
            self.before_send()

    def _count_wire(self, source: str) -> None:
        self._count(source, TOPIC_FS, "fs.permission")

    def _count(self, source: str, topic: str, event_type: str) -> None:
        self.published += 1
        if self._metrics is not None:
            self._counter(self._metrics, source, topic, event_type).inc()

    def _counter(self, metrics: Metrics, source: str, topic: str, event_type: str) -> Counter:
        key = (source, topic, event_type)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.part(CollectorMetrics).collector_events_published.labels(
                collector=source, topic=topic, type=event_type
            )
        return counter
