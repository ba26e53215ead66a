"""Dispatch: exposure events from the bus to every sink, each delivered exactly once in effect.

For each record: decode (a bad one is dead-lettered), then for each sink that
has not yet delivered this event id (the delivery log survives restarts),
render and send, retrying :class:`RetryableSinkError` with capped exponential
backoff (or the sink's ``retry_after``) until it passes or the stage is
stopped; a :class:`PermanentSinkError` is dead-lettered with its reason. The
consumer's position is committed only after every sink is done with the
batch, so a crash loses nothing and the delivery log keeps it from repeating.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from alerts.base import PermanentSinkError, RetryableSinkError, Sink
from permwatch.deadletter import dead_letter
from permwatch.events import TOPIC_EXPOSURES, DecodeError, ExposureEvent, decode
from permwatch.transport.base import Bus, Consumer, Record

log = logging.getLogger("permwatch.alerts")


class DeliveryLog:
    """Which (sink, event id) pairs were delivered; SQLite so it survives restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS delivered (sink TEXT, event_id TEXT, PRIMARY KEY (sink, event_id))"
        )

    def seen(self, sink: str, event_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM delivered WHERE sink = ? AND event_id = ?", (sink, event_id))
        return row.fetchone() is not None

    def mark(self, sink: str, event_id: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO delivered VALUES (?, ?)", (sink, event_id))

    def close(self) -> None:
        self._conn.close()


class Dispatcher:
    def __init__(
        self,
        bus: Bus,
        sinks: Sequence[Sink],
        delivery_log: DeliveryLog,
        *,
        group: str = "permwatch-alerts",
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        sleep: Callable[[float, threading.Event], bool] | None = None,
    ) -> None:
        self.bus = bus
        self.sinks = list(sinks)
        self.delivery_log = delivery_log
        self.group = group
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._sleep = sleep or (lambda seconds, stop: stop.wait(seconds))
        self.delivered = 0
        self.failed = 0
        self.retries = 0

    def run(self, stop: threading.Event) -> None:
        consumer = self.bus.consumer([TOPIC_EXPOSURES], self.group)
        log.info("alerts started: sinks %s", ", ".join(s.name for s in self.sinks) or "none")
        try:
            while not stop.is_set():
                records = consumer.poll(0.2, max_records=200)
                if records and self.handle(records, consumer, stop):
                    continue
        finally:
            consumer.close()

    def handle(self, records: list[Record], consumer: Consumer, stop: threading.Event) -> bool:
        """Deliver a batch; commit and return True only if every record was dealt with."""
        for record in records:
            try:
                event = decode(record.value)
            except DecodeError as exc:
                dead_letter(self.bus, record, exc.reason, stage="alerts")
                continue
            if not isinstance(event, ExposureEvent):
                dead_letter(
                    self.bus, record, f"a {event.type} event does not belong on topic exposures", stage="alerts"
                )
                continue
            for sink in self.sinks:
                if not self._deliver(sink, event, record, stop):
                    return False  # stopping: leave the batch uncommitted, it comes again
        self.bus.flush()
        consumer.commit()
        return True

    def _deliver(self, sink: Sink, event: ExposureEvent, record: Record, stop: threading.Event) -> bool:
        if self.delivery_log.seen(sink.name, event.event_id):
            return True
        payload = sink.render(event)
        delay = self.backoff_initial
        while True:
            try:
                sink.send(payload)
            except RetryableSinkError as exc:
                self.retries += 1
                wait = exc.retry_after if exc.retry_after is not None else delay
                log.warning("sink %s: %s; retrying %s in %.1f s", sink.name, exc, event.event_id, wait)
                if self._sleep(wait, stop):
                    return False
                delay = min(delay * 2, self.backoff_max)
                continue
            except PermanentSinkError as exc:
                self.failed += 1
                log.error("sink %s: %s; %s dead-lettered", sink.name, exc, event.event_id)
                dead_letter(self.bus, record, f"sink {sink.name}: {exc}", stage="alerts")
            else:
                self.delivered += 1
            self.delivery_log.mark(sink.name, event.event_id)
            return True
