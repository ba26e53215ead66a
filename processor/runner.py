"""The processor role: read input topics, run the engine, publish exposures, then commit.

Per batch: decode each record (what does not decode, or arrives on the wrong
topic, is dead-lettered with the reason and the batch goes on), apply it to
the :class:`processor.engine.Engine`, publish the resulting exposure events,
flush, and only then commit the consumer's position. A crash between publish
and commit re-publishes the same events with the same ids, which the alert
stage deduplicates. On start the consumer replays history to rebuild the
in-memory state; exposures that history already emitted are not re-emitted.

Metrics (:class:`permwatch.metrics.Metrics`): events handled by topic and
type, exposure events published by status, the detection latency of each
(``detected_at - observed_at``), dead letters, and the book of open exposures,
which follows every verdict, replayed ones included, so a restarted processor
reports what is open.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from permwatch.config import ProcessorConfig
from permwatch.deadletter import dead_letter, export_dead_letters
from permwatch.events import (
    INPUT_TOPICS,
    TOPIC_EXPOSURES,
    AnyEvent,
    DecodeError,
    ExposureEvent,
    ExposureStatus,
    decode,
    encode,
    utcnow,
)
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus, Consumer, Record
from processor.engine import Engine
from processor.exposures import Verdict

log = logging.getLogger("permwatch.processor")


class ProcessorRunner:
    def __init__(
        self,
        bus: Bus,
        config: ProcessorConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.metrics = metrics
        if metrics is not None:  # series at 0 from the start, so rate() sees the first increment
            export_dead_letters(metrics, "processor")
            for status in ExposureStatus:
                metrics.processor_exposure_events.labels(status=status.value)
        self.engine = Engine(source=config.source, clock=clock)
        self.handled = 0
        self.dead_letters = 0
        self.exposures_published = 0
        self.caught_up = threading.Event()
        self._replaying = False

    def run(self, stop: threading.Event) -> None:
        consumer = self.bus.consumer(INPUT_TOPICS, self.config.group, replay_history=True)
        log.info("processor started (group %s)", self.config.group)
        try:
            while not stop.is_set():
                records = consumer.poll(0.2, max_records=self.config.batch_max)
                if records:
                    self.handle(records, consumer)
                else:
                    self.caught_up.set()
        finally:
            consumer.close()

    def handle(self, records: list[Record], consumer: Consumer) -> list[ExposureEvent]:
        """Apply a batch, judge what it touched once, publish, flush, then commit."""
        published: list[ExposureEvent] = []
        handled: Counter[tuple[str, str]] = Counter()
        for record in records:
            if not record.replayed and self._replaying:
                # History is rebuilt: what it would emit was emitted before the restart.
                self._track(self.engine.flush())
                self._replaying = False
            self._replaying = record.replayed
            event = self._decode(record)
            if event is not None:
                self.engine.apply(event)
                self.handled += 1
                handled[record.topic, event.type] += 1
        verdicts = self.engine.flush()
        self._track(verdicts)
        if not self._replaying:
            published = [verdict.to_event() for verdict in verdicts]
        for exposure in published:
            self.bus.publish(TOPIC_EXPOSURES, exposure.key, encode(exposure))
            log.info(
                "exposure %s %s: %s (%s) people=%d groups=%s",
                exposure.status.value,
                exposure.exposure_id,
                exposure.folder,
                exposure.label.name,
                exposure.people,
                ",".join(exposure.groups) or "-",
            )
        self.bus.flush()
        consumer.commit()
        self.exposures_published += len(published)
        self._count(handled, published)
        return published

    def _track(self, verdicts: list[Verdict]) -> None:
        """Keep the open-exposure book (a metric) in step with the engine, replayed verdicts included."""
        if self.metrics is None:
            return
        for verdict in verdicts:
            label = verdict.label
            self.metrics.open_exposures.record(
                verdict.exposure_id, verdict.status, label.name, label.severity.value, verdict.opened_at
            )

    def _count(self, handled: Counter[tuple[str, str]], published: list[ExposureEvent]) -> None:
        """Per batch rather than per record: a counter update costs about as much as a small event's apply."""
        if self.metrics is None:
            return
        for (topic, event_type), count in handled.items():
            self.metrics.processor_events_handled.labels(topic=topic, type=event_type).inc(count)
        for exposure in published:
            self.metrics.processor_exposure_events.labels(status=exposure.status.value).inc()
            latency = (exposure.detected_at - exposure.observed_at).total_seconds()
            self.metrics.detection_latency.observe(max(0.0, latency))

    def _decode(self, record: Record) -> AnyEvent | None:
        """The record's event, or None after dead-lettering it (once: not again while replaying)."""
        try:
            event = decode(record.value)
        except DecodeError as exc:
            reason = exc.reason
        else:
            if event.topic == record.topic and event.topic in INPUT_TOPICS:
                return event
            reason = f"a {event.type} event does not belong on topic {record.topic}"
        if not record.replayed:
            dead_letter(self.bus, record, reason, stage="processor", metrics=self.metrics)
            self.dead_letters += 1
        return None
